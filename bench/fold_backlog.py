"""Benchmark phase: a real lists worker folds a backlog of changes while a real query worker
answers searches; the fold's memory and the searches' waits (called by bench.recommend on its
``--n-http`` catalogue).

The two processes are the Procfile's ``lists`` (``celery --pool solo -Q lists``: folds) and
``query`` (``-Q query``: searches), as production runs them.

- **memory**: the lists worker first folds one change, which loads its matrices and lists; its
  resident size then, less before, is what the matrices and lists take. Its peak counter is
  reset (``/proc/<pid>/clear_refs``), ``--backlog-items`` new items (every kind) commit as
  ingestion commits them and ask for a fold; once no change is pending, its ``VmHWM`` less the
  matrices is the fold's peak, the matrices being those before the fold plus the new items'
  rows and lists, which the fold adds and the worker keeps (counted by their size).
- **pending**: before the fold is asked for, the same searches with the backlog pending (what
  the pending changes cost a search by themselves, fold or none).
- **waits**: while that fold runs, a client asks the query worker for an item's exact
  neighbours (``workers.query.search_item``, what a product page sends when the item's list is
  being folded; on the ``query`` queue, where the web sends it when the version has no workers
  of its own) one after another; each answer's time less the median of the same searches with
  no fold running is how long it waited on the fold.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.vocabulary import DISPLAY_ORDER as KINDS

_SEARCH_TIMEOUT_S = 3600.0


def _row_bytes(dim: int) -> int:
    """What one item's row of one kind holds in a lists worker: its float32 vector, two norms
    and its id (workers.search.index.KindMatrix), its list (ids and float64 distances,
    LIST_WIDTH each, a length and a flag: workers.search.neighbour_lists) and its entries in
    the row map and the row versions (dicts of Python ints, ~100 bytes each)."""
    from shared.search.lists import LIST_WIDTH

    return dim * 4 + 4 + 8 + 8 + LIST_WIDTH * (8 + 8) + 8 + 1 + 200


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _search_s(client: Any, item_id: int, version: str, k: int) -> float:
    """One exact search by the worker, start to answer."""
    from shared import task_names
    from shared.queueing import QUEUE_QUERY

    started = time.perf_counter()
    result = client.send_task(
        task_names.SEARCH_ITEM,
        kwargs={"item_id": item_id, "version": version, "kinds": list(KINDS), "k": k},
        queue=QUEUE_QUERY,
    )
    try:
        result.get(timeout=_SEARCH_TIMEOUT_S)
    finally:
        result.forget()
    return time.perf_counter() - started


def _pending(settings: Any) -> bool:
    from bench.recommend import _connect

    with _connect(settings) as conn:
        return bool(
            conn.execute("SELECT 1 FROM list_changes WHERE fold_id IS NULL LIMIT 1").fetchone()
        )


def _wait_folded(settings: Any, timeout_s: float) -> float:
    started = time.perf_counter()
    while _pending(settings):
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"changes still pending after {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - started


class _Searcher(threading.Thread):
    """Searches one after another until told to stop; each one's (issued, seconds)."""

    def __init__(self, client: Any, ids: np.ndarray, version: str, seed: int) -> None:
        super().__init__(name="bench-searches", daemon=True)
        self.client, self.ids, self.version = client, ids, version
        self.rng = np.random.default_rng(seed)
        self.done: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            item = int(self.ids[int(self.rng.integers(self.ids.size))])
            issued = time.perf_counter()
            self.done.append((issued, _search_s(self.client, item, self.version, 10)))
            self.stop.wait(0.1)


def _start(settings: Any, queue: str, wait_s: float) -> Any:
    from tests.support.worker import WorkerProcess

    log_path = Path(tempfile.mkdtemp(prefix=f"visrec-bench-backlog-{queue}-")) / "worker.log"
    # A query worker loads an embedder at start; random weights: searches by item never embed.
    # INFO: its start is recognised by the "ready" line of its log.
    worker = WorkerProcess(
        settings.replace(embedder_weights="random", log_level="INFO"), log_path, queues=(queue,)
    )
    worker.start(wait_s=wait_s)
    if worker.proc is None:
        raise RuntimeError(f"the {queue} worker did not start")
    return worker


def phase_backlog(args: Any, settings: Any, ids: np.ndarray, version: str, out: dict) -> None:
    """``out["backlog"]``: the fold's peak memory and the searches' waits (module docstring)."""
    from shared.queueing import QUEUE_LISTS, QUEUE_QUERY, make_celery

    lister = _start(settings, QUEUE_LISTS, 300)
    try:
        querier = _start(settings, QUEUE_QUERY, 900)  # an embedder first: minutes when busy
    except BaseException:
        lister.stop()
        raise
    client = make_celery(settings)
    try:
        out["backlog"] = _measure(args, settings, ids, version, client, lister, querier)
    finally:
        client.close()
        querier.stop()
        lister.stop()


def _measure(
    args: Any, settings: Any, ids: np.ndarray, version: str, client: Any, lister: Any, querier: Any
) -> dict[str, Any]:
    from bench.recommend import populate
    from shared.search.scheduling import request_fold

    pid, query_pid = lister.proc.pid, querier.proc.pid
    cold_kb, query_cold_kb = _status_kb(pid, "VmRSS"), _status_kb(query_pid, "VmRSS")
    populate(settings, 1, args.dim, args.seed + 11, log_changes=True, prefix="warm-bl-")
    request_fold(settings, reason="bench backlog warm-up")
    warm_fold_s = _wait_folded(settings, 3600)
    rng = np.random.default_rng(args.seed + 12)
    baseline = [
        _search_s(client, int(ids[int(rng.integers(ids.size))]), version, 10)
        for _ in range(args.backlog_searches)
    ]
    matrices_kb = _status_kb(pid, "VmRSS") - cold_kb
    query_matrices_kb = _status_kb(query_pid, "VmRSS") - query_cold_kb
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
    populate(settings, args.backlog_items, args.dim, args.seed + 13, log_changes=True, prefix="bl-")
    # The backlog committed, no fold asked yet: what pending changes alone cost a search (the
    # first one reads their vectors).
    pending = [
        _search_s(client, int(ids[int(rng.integers(ids.size))]), version, 10)
        for _ in range(args.backlog_searches)
    ]
    searcher = _Searcher(client, ids, version, args.seed + 14)
    began = time.perf_counter()
    request_fold(settings, reason="bench backlog")
    searcher.start()
    fold_s = _wait_folded(settings, 3600)
    ended = time.perf_counter()
    searcher.stop.set()
    searcher.join(timeout=_SEARCH_TIMEOUT_S)
    peak_kb = _status_kb(pid, "VmHWM")
    # The fold puts the new items into the matrices and their lists, rows the worker keeps:
    # the matrices after it are the ones before plus those rows. Their headroom is not touched
    # at load (workers.search.index), so the rows a fold fills are counted by their size, not
    # taken from RSS (which after the fold also holds heap the fold freed but kept).
    grown_kb = args.backlog_items * len(KINDS) * _row_bytes(args.dim) // 1024
    held_after_kb = _status_kb(pid, "VmRSS") - cold_kb
    typical = statistics.median(baseline)
    pending_typical = statistics.median(pending)
    during = [s for issued, s in searcher.done if began <= issued <= ended]
    return {
        "n": int(ids.size),
        "items": args.backlog_items,
        "changes": args.backlog_items * len(KINDS),
        "fold_s": round(fold_s, 1),
        "warm_up_fold_s": round(warm_fold_s, 1),
        "worker_cold_mb": round(cold_kb / 1024, 1),
        "matrices_mb": round(matrices_kb / 1024, 1),
        "query_worker_matrices_mb": round(query_matrices_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "matrices_grown_mb": round(grown_kb / 1024, 1),
        "rss_after_less_start_mb": round(held_after_kb / 1024, 1),
        "peak_less_matrices_mb": round((peak_kb - matrices_kb - grown_kb) / 1024, 1),
        "peak_less_matrices_before_mb": round((peak_kb - matrices_kb) / 1024, 1),
        "search_ms_no_fold_p50": round(typical * 1000, 1),
        "search_ms_pending_no_fold_p50": round(statistics.median(pending) * 1000, 1),
        "search_ms_pending_no_fold_max": round(max(pending) * 1000, 1),
        "searches_during_fold": len(during),
        "search_ms_during_fold_p50": round(statistics.median(during or [0.0]) * 1000, 1),
        "search_ms_during_fold_max": round(max(during, default=0.0) * 1000, 1),
        "wait_ms_max": round(max([0.0, *(s - typical for s in during)]) * 1000, 1),
        # The same over the searches with the backlog pending and no fold: a search during the
        # fold merges the same pending changes, fold or none.
        "wait_over_pending_ms_max": round(
            max([0.0, *(s - pending_typical for s in during)]) * 1000, 1
        ),
    }
