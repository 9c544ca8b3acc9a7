"""``visrec models``: the model versions as a table; build (with a progress bar), serve, retire.

visrec models --api URL [--api-key KEY] [--json]
visrec models build VERSION --api URL --api-key KEY [--wait]
visrec models serve VERSION --api URL --api-key KEY
visrec models retire VERSION --api URL --api-key KEY
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm import tqdm

from visrec_client.api import ApiClient, JsonDoc

COLUMNS = ("version", "state", "complete", "items", "catalogue", "workers", "created_at")


def table(doc: JsonDoc) -> str:
    """The versions as aligned text columns, the serving one marked with ``*``."""
    rows = [["", *COLUMNS]]
    for version in doc.get("versions") or []:
        mark = "*" if version.get("version") == doc.get("serving") else ""
        rows.append([mark, *(str(version.get(column, "")) for column in COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class BuildProgressBar:
    """Items embedded in the version of the catalogue's ready items, while it builds."""

    def __init__(self, version: str) -> None:
        self.bar = tqdm(total=0, unit="item", desc=f"build {version}", file=sys.stderr)

    def __call__(self, doc: dict[str, Any]) -> None:
        total = int(doc.get("catalogue") or 0)
        if total != self.bar.total:
            self.bar.total = total
        self.bar.set_postfix(state=doc.get("state"), pending=doc.get("pending_changes"))
        self.bar.update(int(doc.get("items") or 0) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    client = ApiClient(args.api, args.api_key)
    if args.action is None:
        doc = client.models()
        print(json.dumps(doc, indent=2) if args.json else table(doc))
        return 0
    if not args.version:
        print("error: name the version", file=sys.stderr)
        return 2
    doc = client.model_action(args.version, args.action)
    if args.action == "build" and args.wait:
        bar = BuildProgressBar(args.version)
        try:
            doc = client.wait_for_model(args.version, poll_s=args.poll_s, on_poll=bar)
        finally:
            bar.close()
    if args.json:
        print(json.dumps(doc, indent=2))
    elif args.action == "serve":
        print(f"serving {doc.get('serving')}")
    else:
        print(
            f"{doc.get('version')}: {doc.get('state')}, {doc.get('items')} of"
            f" {doc.get('catalogue')} items"
        )
    return 0


def add_parser(commands: Any, api: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "models", parents=[api], help="model versions: list, build, serve (roll back), retire"
    )
    cmd.add_argument("action", nargs="?", choices=("build", "serve", "retire"))
    cmd.add_argument("version", nargs="?")
    cmd.add_argument("--api-key", help="needed to build, serve or retire")
    cmd.add_argument("--wait", action="store_true", help="build: show progress until complete")
    cmd.add_argument("--json", action="store_true", help="print the API's JSON document")
    cmd.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    cmd.set_defaults(run=run)
