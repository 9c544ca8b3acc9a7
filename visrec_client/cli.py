"""The ``visrec`` command: bulk ingest from a folder, a job's status, an item's look-alikes.

    visrec ingest DIR --api URL --api-key KEY [--wait] [--recursive] [--chunk-files N]
                                              [--chunk-mb N]
    visrec status JOB_ID_OR_URL --api URL [--wait] [--json]
    visrec similar SKU --api URL [--k 5] [--kinds top,bottom,full] [--json]
    visrec models [build|serve|retire VERSION] --api URL [--api-key KEY] [--wait] [--json]

``ingest`` sends the folder's images as multipart uploads in chunks (one job per chunk, bounded
by file count and bytes); with ``--wait`` a progress bar polls the jobs until they all end.
Exit status: 0 when every item succeeded (or, without ``--wait``, every job was accepted), 1 when
some items failed, 2 on a usage, network or HTTP error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from visrec_client import models_cli
from visrec_client.api import FINISHED_JOB_STATUSES, ApiCallError, ApiClient, JsonDoc
from visrec_client.folder import FolderError, chunked, find_images
from visrec_client.progress import JobsProgressBar

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_ERROR = 0, 1, 2
KINDS = ("top", "bottom", "full")


def _print_failures(doc: JsonDoc) -> None:
    errors = doc.get("errors") or {}
    items = errors.get("items") or []
    for error in items:
        print(f"  {error.get('sku')}: {error.get('reason')}: {error.get('error')}")
    if (errors.get("total") or 0) > len(items):
        print(f"  ... and more: visrec status {doc.get('id')} (or GET its status_url)")


def ingest(args: argparse.Namespace) -> int:
    files = find_images(Path(args.dir), args.recursive)
    client = ApiClient(args.api, args.api_key)
    status_urls: list[str] = []
    chunks = list(chunked(files, args.chunk_files, args.chunk_mb * 1024 * 1024))
    for chunk in tqdm(
        chunks, desc="upload", unit="chunk", file=sys.stderr, disable=len(chunks) < 2
    ):
        created = client.submit_files(chunk)
        status_urls.append(created["status_url"])
        print(f"job {created['id']}: {len(chunk)} images -> {created['status_url']}")
    if not args.wait:
        return EXIT_OK
    with JobsProgressBar(len(files), desc="ingest") as bar:
        docs = client.wait_for_jobs(status_urls, poll_s=args.poll_s, on_poll=bar)
    done = sum(doc.get("done") or 0 for doc in docs)
    failed = sum(doc.get("failed") or 0 for doc in docs)
    print(f"{done} succeeded, {failed} failed, {len(files)} images in {len(docs)} job(s)")
    for doc in docs:
        _print_failures(doc)
    return EXIT_OK if failed == 0 else EXIT_ITEMS_FAILED


def status(args: argparse.Namespace) -> int:
    client = ApiClient(args.api, args.api_key)
    if args.wait:
        with JobsProgressBar(0, desc="job") as bar:
            doc = client.wait_for_job(args.job, poll_s=args.poll_s, on_poll=bar)
    else:
        doc = client.job(args.job)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"job {doc.get('id')}: {doc.get('status')}, {doc.get('done')} done, "
            f"{doc.get('failed')} failed, {doc.get('pending')} pending of {doc.get('total')}"
        )
        if doc.get("error"):
            print(f"  error: {doc['error']}")
        _print_failures(doc)
    finished_with_failures = doc.get("status") in FINISHED_JOB_STATUSES and (
        doc.get("status") == "failed" or (doc.get("failed") or 0) > 0
    )
    return EXIT_ITEMS_FAILED if finished_with_failures else EXIT_OK


def _hit(hit: dict[str, Any]) -> str:
    distance = hit.get("distance")
    if isinstance(distance, int | float):
        return f"{hit.get('sku')} ({distance:.3g})"
    return str(hit.get("sku"))


def similar(args: argparse.Namespace) -> int:
    client = ApiClient(args.api, args.api_key)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    doc = client.recommendations(args.sku, args.k, kinds)
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    results: dict[str, list[dict[str, Any]]] = doc.get("results") or {}
    missing: dict[str, str] = doc.get("missing") or {}
    for kind, hits in results.items():
        if kind in missing:
            print(f"{kind}: none: {missing[kind]}")
        else:
            print(f"{kind}: {', '.join(_hit(hit) for hit in hits) or '(no other items yet)'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visrec", description="Client for the visrec recommendation service's HTTP API."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--api", required=True, help="base URL of the web service")

    cmd = commands.add_parser(
        "ingest", parents=[api], help="upload a folder of images as ingestion jobs"
    )
    cmd.add_argument("dir", help="folder of images; each file's SKU is its name without extension")
    cmd.add_argument("--api-key", required=True, help="one of the service's API_KEYS")
    cmd.add_argument("--wait", action="store_true", help="show progress until the jobs end")
    cmd.add_argument("--recursive", action="store_true", help="include subfolders")
    cmd.add_argument("--chunk-files", type=int, default=200, help="files per job (default 200)")
    cmd.add_argument("--chunk-mb", type=int, default=64, help="MiB per upload (default 64)")
    cmd.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    cmd.set_defaults(run=ingest)

    cmd = commands.add_parser(
        "status", parents=[api], help="a job's status and failed items (exit 1 if items failed)"
    )
    cmd.add_argument("job", help="the job's id or its status URL")
    cmd.add_argument("--api-key", help="not needed to read a job")
    cmd.add_argument("--wait", action="store_true", help="wait until the job has finished")
    cmd.add_argument("--json", action="store_true", help="print the API's JSON document")
    cmd.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    cmd.set_defaults(run=status)

    cmd = commands.add_parser(
        "similar", parents=[api], help="an item's recommendations: nearest items per kind"
    )
    cmd.add_argument("sku")
    cmd.add_argument("--k", type=int, default=5, help="items per kind (default 5)")
    cmd.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated kinds (default: all three)"
    )
    cmd.add_argument("--api-key", help="not needed to read recommendations")
    cmd.add_argument("--json", action="store_true", help="print the API's JSON document")
    cmd.set_defaults(run=similar)
    models_cli.add_parser(commands, api)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ApiCallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.details is not None:
            print(f"details: {json.dumps(exc.details)}", file=sys.stderr)
        return EXIT_ERROR
    except (FolderError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
