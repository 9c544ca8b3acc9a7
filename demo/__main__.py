"""``python -m demo`` (``make demo``): see :mod:`demo` for the phases.

Options come from the command line or, for ``make demo``, the environment: ``DEMO_ONCE=1``
exits after printing instead of serving the UI; ``DEMO_PORT`` (default 8000; a free port is
picked when it is taken); ``DEMO_COUNT`` and ``DEMO_SIZE`` shape the sample catalogue.
``MODEL_DIR`` names your own bundle instead of the trained demo one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo import bundle as bundles
from demo import recipe
from demo.catalogue import Catalogue, ensure_catalogue
from demo.database import ensure_database, upgrade_head
from demo.detection import detections_of, print_detection, score_detections
from demo.environment import (
    DemoPaths,
    demo_paths,
    stack_environment,
    stack_settings,
    user_settings,
)
from demo.phases import elapsed, phase, say
from demo.progress import StepBar
from demo.report import print_filtered, print_item, print_scores
from demo.scoring import score_kind
from demo.stack import Stack, StackError, free_port, port_is_free
from shared.vocabulary import DISPLAY_ORDER as KINDS
from shared.vocabulary import VectorKind
from visrec_client import ApiClient

if TYPE_CHECKING:
    from shared.config import Settings

K = 5
SHOWN_ITEMS = 3


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--once",
        action="store_true",
        default=_env_flag("DEMO_ONCE"),
        help="exit after printing (env DEMO_ONCE=1)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument(
        "--count",
        type=int,
        default=int(os.environ.get("DEMO_COUNT", "60")),
        help="catalogue size (default 60)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=int(os.environ.get("DEMO_SIZE", "320")),
        help="catalogue photo side in pixels (default 320)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--job-timeout", type=float, default=900.0)
    return parser


def _raise_on_sigterm() -> None:
    # A `kill <pid>` must stop the stack as Ctrl-C does: both unwind through `finally`.
    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _wait_for_cache(client: ApiClient, skus: Sequence[str], timeout_s: float = 120.0) -> None:
    """Wait until the last item's recommendations cover the freshly ingested catalogue.

    Answers are exact from the first moment (a query worker searches for items whose own
    neighbour list is not folded yet); this only waits for the last batch's job to settle.
    """
    want = min(K, len(skus) - 1)
    deadline = time.monotonic() + timeout_s
    while True:
        document = client.recommendations(skus[-1], K, (VectorKind.FULL,))
        if len((document.get("results") or {}).get(VectorKind.FULL) or []) >= want:
            return
        if time.monotonic() > deadline:
            say(f"   warning: the cache still lacks items after {timeout_s:.0f} s")
            return
        time.sleep(1.0)


def _job_progress(bar: StepBar) -> Callable[[Sequence[dict[str, Any]]], None]:
    """An ``on_poll`` for the ingestion job: items finished (done + failed) and its status."""

    def on_poll(docs: Sequence[dict[str, Any]]) -> None:
        finished = sum((doc.get("done") or 0) + (doc.get("failed") or 0) for doc in docs)
        failed = sum(doc.get("failed") or 0 for doc in docs)
        status = ",".join(sorted({str(doc.get("status")) for doc in docs}))
        bar.update(finished, f"{status}, {failed} failed")

    return on_poll


def _serving_model_version(client: ApiClient) -> str | None:
    ok, body = client.ready()
    if not ok or not isinstance(body, dict):
        return None
    return ((body.get("checks") or {}).get("model_bundle") or {}).get("model_version")


def run(args: argparse.Namespace) -> int:
    paths = demo_paths()
    user = user_settings()
    port = args.port if port_is_free(args.port) else free_port()
    if port != args.port:
        say(f"port {args.port} is taken; using {port}")
    _database_phase(user, paths, port)
    catalogue = _catalogue_phase(paths, args)
    model_dir = _bundle_phase(paths, user, args.seed)
    settings = stack_settings(user, paths, model_dir, port)
    paths.media.mkdir(parents=True, exist_ok=True)
    stack = Stack(stack_environment(settings), port, paths.logs / "stack.log")
    client = ApiClient(stack.base_url, settings.api_keys[0])
    try:
        _stack_phase(stack, client)
        job_id = _ingestion_phase(client, catalogue, args.job_timeout)
        skus = _recommendations_phase(client, catalogue)
        _print_addresses(stack.base_url, settings.api_keys[0], skus[0], job_id)
        return 0 if args.once else _serve(stack)
    finally:
        with phase("stopping the stack"):
            killed = stack.stop()
            left = stack.leftovers()
            if killed:
                say(f"   killed after the grace period: {killed}")
            say("   no process left running" if not left else f"   STILL RUNNING: {left}")


def _database_phase(user: Settings, paths: DemoPaths, port: int) -> None:
    with phase("1/6 database (visrec_demo, alembic upgrade head)"):
        demo_url = stack_settings(user, paths, paths.bundle, port).database_url
        created = ensure_database(demo_url)
        upgrade_head(demo_url)
        say(f"   {'created' if created else 'found'} database visrec_demo; schema at head")


def _catalogue_phase(paths: DemoPaths, args: argparse.Namespace) -> Catalogue:
    with phase(f"2/6 sample catalogue ({args.count} photos, {args.size} px)"):
        catalogue, written = ensure_catalogue(paths.catalogue, args.count, args.seed, args.size)
        say(
            f"   {'wrote' if written else 'reusing'} {len(catalogue.labels)} photos "
            f"+ labels.json in {paths.catalogue}"
        )
    return catalogue


def _bundle_phase(paths: DemoPaths, user: Settings, seed: int) -> Path:
    """The bundle the stack serves: MODEL_DIR's, or the demo's own (trained once, cached)."""
    with phase("3/6 model bundle"):
        if user.model_dir is not None:
            say(f"   MODEL_DIR={user.model_dir}: {bundles.check_user_bundle(user.model_dir, user)}")
            return user.model_dir
        model_dir = paths.bundle
        if bundles.cached_bundle_ok(model_dir):
            say(f"   reusing the demo bundle in {model_dir}")
        else:
            say("   training a small demo bundle on synthetic data (once; cached after)")
            bundles.train_demo_bundle(model_dir, paths.training, paths.logs / "training.log")
        say(f"   {bundles.check_user_bundle(model_dir, user.replace(embedder_weights=None))}")
        say(f"   {recipe.training_data_note(seed)}")
    return model_dir


def _stack_phase(stack: Stack, client: ApiClient) -> None:
    procfile = "honcho start -f Procfile web worker query lists"
    with phase(f"4/6 stack: {procfile} (logs: {stack.log_path})"):
        stack.start()
        stack.wait_until(lambda: client.ready()[0], "web /readyz", timeout_s=120)
        stack.wait_until(stack.worker_ready, "celery worker", timeout_s=240)
        say(
            f"   web on {stack.base_url}; worker on ingest/default, query worker on query,"
            " lists worker on lists"
        )


def _ingestion_phase(client: ApiClient, catalogue: Catalogue, timeout_s: float) -> str:
    """Ingests the catalogue through the API; returns the job's id."""
    with phase("5/6 ingestion through POST /api/v1/jobs"):
        job = client.submit_files(catalogue.images, catalogue.image_attributes)
        say(f"   job {job['id']} accepted ({job['status']}); polling {job['status_url']}")
        with StepBar("   ingesting", len(catalogue.images), "img") as bar:
            final = client.wait_for_job(
                job["status_url"], timeout_s=timeout_s, on_poll=_job_progress(bar)
            )
        say(
            f"   job {final['status']}: {final.get('done')} done "
            f"({final.get('skipped') or 0} unchanged since an earlier run, not re-embedded), "
            f"{final.get('failed')} failed, of {final.get('total')}"
        )
        for error in ((final.get("errors") or {}).get("items") or [])[:5]:
            say(f"   failed: {error.get('sku')}: {error.get('reason')}: {error.get('error')}")
    return str(job["id"])


def _recommendations_phase(client: ApiClient, catalogue: Catalogue) -> list[str]:
    """Prints some items' recommendations and the scores of all; returns the skus, sorted."""
    with phase(f"6/6 recommendations (k={K}) and precision@{K}"):
        skus = sorted(catalogue.labels)
        _wait_for_cache(client, skus)
        documents = {sku: client.recommendations(sku, K, KINDS) for sku in skus}
        for sku in skus[:SHOWN_ITEMS]:
            print_item(sku, documents[sku], catalogue.labels, K)
        scores = []
        for kind in KINDS:
            results = {
                sku: [hit["sku"] for hit in (doc.get("results") or {}).get(kind) or []]
                for sku, doc in documents.items()
            }
            scores.append(score_kind(kind, results, catalogue.labels, skus, K))
        print_scores(scores, K)
        model_version = _serving_model_version(client)
        detected = {sku: detections_of(client.item(sku), model_version) for sku in skus}
        print_detection(score_detections(detected, catalogue.labels))
        shop_rules = [("attr.in_stock", "true"), ("distinct", "style")]
        filtered = client.recommendations(skus[0], K, (VectorKind.FULL,), shop_rules)
        print_filtered(skus[0], documents[skus[0]], filtered, catalogue.attributes, K)
    return skus


def _print_addresses(base_url: str, api_key: str, sku: str, job_id: str) -> None:
    say(f"\nUI:  {base_url}/   (catalogue)")
    say(f"     {base_url}/items/{sku}   (a product and what looks like it)")
    say(f"     {base_url}/items/{sku}?in_stock=1&one_per_family=1   (in stock, one per style)")
    say(f"     {base_url}/search   (find items like a photo)")
    say(f"     {base_url}/jobs/{job_id}   (the ingestion job)")
    say(
        f"API: curl -H 'Authorization: Bearer {api_key}' "
        f"{base_url}/api/v1/items/{sku}/recommendations?k=5"
    )
    say(f"Ready in {elapsed():.0f} s.")


def _serve(stack: Stack) -> int:
    """Keeps the stack up until Ctrl-C (main answers 130) or until it stops by itself (1)."""
    say("Serving until Ctrl-C.")
    while stack.running():
        stack.remember_processes()
        time.sleep(1.0)
    say(f"The stack exited on its own; see {stack.log_path}")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _raise_on_sigterm()
    try:
        return run(args)
    except KeyboardInterrupt:
        say("\nstopped")
        return 130
    except StackError as exc:
        say(f"\ndemo failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
