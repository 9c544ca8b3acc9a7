"""Benchmark: a model-version rollout at N items, in one run (issue 19).

    python -m bench.versions [--n 100000] [--dim 2048] [--batch 64]

- ``build``: a catalogue of ``--n`` ready items on version A (vectors generated, lists
  computed); version B is built as ``POST /api/v1/models/B/build`` builds it: the catch-up
  walks the catalogue ``--batch`` items a task, reads every stored photo from the media store,
  "embeds" it (a generator stands in for the models: vectors of 3 kinds, no crops), commits
  with the guarded upsert, then B's fold computes its lists in full. Items per second from
  the first chunk until B is complete (embedding excluded, everything else in).
- ``switch``: ``POST /api/v1/models/<v>/serve`` through the app, alternating B and A, each
  answered 200: the median and worst; and how long after the switch's answer a product page
  answers with the new version.

Prints a table, then one JSON object as the last line with ``build_100k_items_per_s`` and
``serve_switch_ms`` (the issue's keys; measured at ``--n`` items, which the line also says).
Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.recommend import VERSION as A
from bench.recommend import bench_stack, populate
from shared.vocabulary import DISPLAY_ORDER as KINDS

B = "bench-model-b"
PHOTO = b"\xff\xd8 bench photo bytes \xff\xd9"


class GeneratedModels:
    """Stands in for shared.ml.pipeline.Pipeline: a vector per kind for every photo."""

    def __init__(self, version: str, dim: int, seed: int) -> None:
        self.model_version = version
        self.rng = np.random.default_rng(seed)
        self.dim = dim

    def process(self, images: Sequence[bytes]) -> list[Any]:
        from shared.ml.pipeline import ImageResult

        return [
            ImageResult(
                vectors={
                    str(k): self.rng.standard_normal(self.dim, dtype=np.float32) for k in KINDS
                },
                width=80,
                height=96,
            )
            for _ in images
        ]


def _store_photos(settings: Any, n: int) -> None:
    """Every item's photo in the media store under its media key (populate's keys)."""
    from shared.media import MediaStore

    media = MediaStore(settings.media_root)
    for i in range(n):
        path = media.path_for(f"{i:064x}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PHOTO)


def phase_build(settings: Any, args: argparse.Namespace, out: dict[str, Any]) -> None:
    from shared.db import session_scope
    from shared.versions import registry
    from workers.search.fold import fold
    from workers.search.index import VectorIndex
    from workers.versions.catch_up import catch_up_chunk

    populate(settings, args.n, args.dim, args.seed, log_changes=True)
    _store_photos(settings, args.n)
    began = time.perf_counter()
    fold(settings, index=VectorIndex(), model_version=A)
    out["lists_a_s"] = round(time.perf_counter() - began, 2)
    with session_scope(settings) as session:
        registry.claim_serving_if_none(session, A)
        registry.ensure_known(session, B)
        registry.track(session, B)
    models = GeneratedModels(B, args.dim, args.seed + 1)
    settings_b = settings.replace(ingest_batch_size=args.batch)
    began = time.perf_counter()
    after, embedded = 0, 0
    while True:
        report = catch_up_chunk(settings_b, models, B, after)  # type: ignore[arg-type]
        embedded += report.embedded
        if not report.more:
            break
        after = report.last_id
    embed_s = time.perf_counter() - began
    fold(settings, index=VectorIndex(), model_version=B)
    total_s = time.perf_counter() - began
    with session_scope(settings) as session:
        complete = registry.is_complete(session, B)
    out.update(
        build_items=embedded,
        build_catch_up_s=round(embed_s, 2),
        build_lists_s=round(total_s - embed_s, 2),
        build_s=round(total_s, 2),
        build_complete=complete,
        build_items_per_s=round(args.n / total_s, 1),
    )


def phase_switch(settings: Any, args: argparse.Namespace, out: dict[str, Any]) -> None:
    from web import create_app

    app = create_app(settings.replace(api_keys=("bench-key-0123456789",)))
    client = app.test_client()
    headers = {"Authorization": "Bearer bench-key-0123456789"}
    switches, visible = [], []
    for i in range(args.switches):
        target = B if i % 2 == 0 else A
        began = time.perf_counter()
        response = client.post(f"/api/v1/models/{target}/serve", headers=headers)
        switches.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"switch to {target}: {response.status_code} {response.json}")
        while True:
            page = client.get("/api/v1/items/sku-0000000/recommendations?k=10&kinds=full")
            if page.json.get("model_version") == target:
                break
        visible.append(time.perf_counter() - began)
    from shared.db import session_scope
    from shared.versions import registry

    statements = []
    for i in range(args.switches):
        with session_scope(settings) as session:
            began = time.perf_counter()
            if not registry.switch_serving(session, A if i % 2 == 0 else B):
                raise RuntimeError("a complete version's switch was refused")
            statements.append(time.perf_counter() - began)
    out.update(
        switch_statement_ms=round(statistics.median(statements) * 1000, 2),
        serve_switch_ms=round(statistics.median(switches) * 1000, 2),
        serve_switch_max_ms=round(max(switches) * 1000, 2),
        page_shows_switch_ms_max=round(max(visible) * 1000, 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--broker-db", type=int, default=12)
    parser.add_argument("--cache-db", type=int, default=13)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"n": args.n, "dim": args.dim}
    with bench_stack(args) as settings:
        phase_build(settings, args, out)
        phase_switch(settings, args, out)
    for name, value in out.items():
        print(f"{name:<28} {value}")
    print(
        json.dumps(
            {
                "n": args.n,
                "dim": args.dim,
                "build_100k_items_per_s": out["build_items_per_s"],
                "serve_switch_ms": out["serve_switch_ms"],
                "page_shows_switch_ms_max": out["page_shows_switch_ms_max"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
