"""Benchmark: a model-version rollout at N items, in one run (issue 19).

    python -m bench.versions [--n 100000] [--dim 2048] [--batch 64]

- ``build``: a catalogue of ``--n`` ready items on version A (vectors and lists generated, as
  bench.recommend's http phase makes them: A is the stage, not the measure); version B is
  built as ``POST /api/v1/models/B/build`` builds it: the catch-up walks the catalogue
  ``--batch`` items a task, reads every stored photo from the media store, "embeds" it (a
  generator stands in for the models: vectors of 3 kinds, no crops), commits with the guarded
  upsert, then B's fold computes its lists in full. Items per second from
  the first chunk until B is complete (embedding excluded, everything else in).
- ``switch``: ``POST /api/v1/models/<v>/serve`` through the app, alternating B and A, each
  answered 200: the median and worst; and how long after the switch's answer a product page
  answers with the new version.

Prints a table, then one JSON object as the last line with ``build_100k_items_per_s`` and
``serve_switch_ms`` (the issue's keys; measured at ``--n`` items, which the line also says).
bench.recommend's ``versions`` phase runs the same measures (``measure``) and puts the two keys
on its own last line. Not a test: numbers depend on the machine and on what else runs on it.
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
from bench.recommend import bench_stack, populate, write_generated_lists
from shared.vocabulary import DISPLAY_ORDER as KINDS

B = "bench-model-b"
PHOTO = b"\xff\xd8 bench photo bytes \xff\xd9"
_KEY = "bench-key-0123456789"


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


def measure_build(settings: Any, n: int, dim: int, batch: int, seed: int) -> dict[str, Any]:
    """A catalogue of ``n`` items on A (lists generated), then B built until complete."""
    from shared.db import session_scope
    from shared.versions import registry
    from workers.search.fold import fold
    from workers.search.index import VectorIndex

    began = time.perf_counter()
    # A's lists are the stage, not the measure: generated as the http phase makes them (an
    # exact computation at 100k is tens of minutes here), with no change pending, so A is
    # complete and the switch back to it is allowed.
    norms: dict[str, np.ndarray] = {}
    ids = populate(settings, n, dim, seed, log_changes=False, norms_out=norms)
    write_generated_lists(settings, ids, dim, seed, to_postgres=True, norms=norms)
    _store_photos(settings, n)
    setup_s = time.perf_counter() - began
    with session_scope(settings) as session:
        registry.claim_serving_if_none(session, A)
        registry.ensure_known(session, B)
        registry.track(session, B)
    began = time.perf_counter()
    models = GeneratedModels(B, dim, seed + 1)
    embedded = _catch_up(settings.replace(ingest_batch_size=batch), models)
    embed_s = time.perf_counter() - began
    fold(settings, index=VectorIndex(), model_version=B)
    total_s = time.perf_counter() - began
    with session_scope(settings) as session:
        complete = registry.is_complete(session, B)
    return {
        "n": n,
        "dim": dim,
        "batch": batch,
        "setup_s": round(setup_s, 1),
        "build_items": embedded,
        "build_catch_up_s": round(embed_s, 2),
        "build_lists_s": round(total_s - embed_s, 2),
        "build_s": round(total_s, 2),
        "build_complete": complete,
        "build_items_per_s": round(n / total_s, 1),
    }


def _catch_up(settings: Any, models: GeneratedModels) -> int:
    """One catch-up pass, chunk after chunk, as the task chain runs it; items embedded."""
    from workers.versions.catch_up import catch_up_chunk

    after, embedded = 0, 0
    while True:
        report = catch_up_chunk(settings, models, B, after)  # type: ignore[arg-type]
        embedded += report.embedded
        if not report.more:
            return embedded
        after = report.last_id


def measure_switch(settings: Any, switches: int) -> dict[str, Any]:
    """The serve switch through the app, alternating B and A (both complete), and how long
    after its answer a product page answers with the new version."""
    from web import create_app

    app = create_app(settings.replace(api_keys=(_KEY,)))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {_KEY}"}
    answered, visible = [], []
    for i in range(switches):
        target = B if i % 2 == 0 else A
        began = time.perf_counter()
        response = client.post(f"/api/v1/models/{target}/serve", headers=headers)
        answered.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"switch to {target}: {response.status_code} {response.json}")
        while True:
            page = client.get("/api/v1/items/sku-0000000/recommendations?k=10&kinds=full")
            if page.json.get("model_version") == target:
                break
        visible.append(time.perf_counter() - began - answered[-1])
    return {
        "switches": switches,
        "switch_statement_ms": _statement_ms(settings, switches),
        "serve_switch_ms": round(statistics.median(answered) * 1000, 2),
        "serve_switch_max_ms": round(max(answered) * 1000, 2),
        "page_shows_switch_ms_max": round(max(visible) * 1000, 2),
    }


def _statement_ms(settings: Any, switches: int) -> float:
    """The median of the switch statement alone (no HTTP, no app), alternating A and B."""
    from shared.db import session_scope
    from shared.versions import registry

    took = []
    for i in range(switches):
        with session_scope(settings) as session:
            began = time.perf_counter()
            if not registry.switch_serving(session, A if i % 2 == 0 else B):
                raise RuntimeError("a complete version's switch was refused")
            took.append(time.perf_counter() - began)
    return round(statistics.median(took) * 1000, 2)


def measure(settings: Any, n: int, dim: int, batch: int, switches: int, seed: int) -> dict:
    """Both measures on one stack (bench.recommend's ``versions`` phase runs this too)."""
    out = measure_build(settings, n, dim, batch, seed)
    out.update(measure_switch(settings, switches))
    return out


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
    with bench_stack(args) as settings:
        out = measure(settings, args.n, args.dim, args.batch, args.switches, args.seed)
    for name, value in out.items():
        print(f"{name:<28} {value}")
    line = {"n": out["n"], "dim": out["dim"], "build_100k_items_per_s": out["build_items_per_s"]}
    line.update({key: out[key] for key in ("serve_switch_ms", "page_shows_switch_ms_max")})
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
