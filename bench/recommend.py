"""Benchmark: "you may also like" from neighbour lists, against the scan path, in one run.

    python -m bench.recommend [--n-http 100000] [--n-big 1000000] [--n-build 20000]

Phases (each can be skipped with --skip NAME; all numbers from this one run; the full
computation alone: ``--skip latency,http,fold,backlog,big,versions``):

- ``build``: the full computation of the lists at ``--n-build`` items x 3 kinds (a fold with
  every item pending: blocked products + exact re-rank), against the matrix-product floor
  measured now on the same shapes (2 N^2 d flops per kind at the best sgemm rate this machine
  reaches, numpy/OpenBLAS or torch);
- ``latency``: a real Celery worker holding those lists; a batch of new items commits and asks
  for a fold, as ingestion does: seconds until every list a new item belongs to holds it;
- ``http``: ``--n-http`` items (random 2048-d vectors, 3 kinds) in a throw-away database;
  32 clients x ``--http-seconds`` of ``GET /api/v1/items/<sku>/recommendations?k=10`` through
  gunicorn (2 processes x 8 threads) on the list path, then on the scan path of before
  (bench.scan_baseline: every web process holds the matrices and scans them); req/s, p50, p99,
  errors and each web process's RSS. The lists here are *generated* (right shape and distance
  scale, not exact): an exact computation at this size takes tens of minutes on this CPU (see
  ``build``), and the read path's cost does not depend on which ids a list holds;
- ``fold``: a batch of 64 new items folded into the lists at ``--n-http`` items by a warm
  worker (matrices and lists in memory), PostgreSQL and Redis writes included;
- ``big``: the list read path over HTTP at ``--n-big`` items, lists generated straight into
  Redis (the read path only; vectors are stored 1-d since reads never touch them).
- ``versions``: a model-version rollout at ``--n-versions`` items (bench.versions): version B
  built beside the serving A from the stored photos (vectors generated, embedding excluded,
  everything else in: catch-up chunks, guarded commits, B's lists computed in full), then the
  serve switch through the app and how soon a product page answers with the new version;
- ``article`` (only with ``--article-sizes``): the article's ``similar_k`` loop against the
  in-process exact search, as measured since the first version.

Prints a table, then one JSON object as the last line. Not a test: numbers depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.search.knn import squared_norms, top_k
from shared.vocabulary import DISPLAY_ORDER as KINDS
from shared.vocabulary import ItemStatus, VectorKind

ROOT = Path(__file__).resolve().parents[1]


# --- 1. the article, faithfully --------------------------------------------------------------


def euclidean_distance(a: np.ndarray, b: np.ndarray) -> float:
    # The article calls euclidean_distance without showing it; this is the usual definition.
    return np.linalg.norm(a - b)


def similar_k(image_id, k, topwear_database, bottomwear_database):
    toprecommended = []
    bottomrecommended = []
    output1 = topwear_database[image_id]
    output2 = bottomwear_database[image_id]

    dis_dict = {}
    for key in topwear_database:
        dis_dict[key] = euclidean_distance(topwear_database[key], output1)
    sorted_dis_dict = dict(sorted(dis_dict.items(), key=lambda item: item[1]))
    i = 0
    for key in sorted_dis_dict:
        if i == k:
            break
        if key == image_id:
            continue
        toprecommended.append(key)
        i = i + 1

    dis_dict = {}
    for key in bottomwear_database:
        dis_dict[key] = euclidean_distance(bottomwear_database[key], output2)
    sorted_dis_dict = dict(sorted(dis_dict.items(), key=lambda item: item[1]))
    i = 0
    for key in sorted_dis_dict:
        if i == k:
            break
        if key == image_id:
            continue
        bottomrecommended.append(key)
        i = i + 1

    return toprecommended, bottomrecommended


# --- helpers ---------------------------------------------------------------------------------


def _vectors(n: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for kind in KINDS:
        out[kind] = rng.standard_normal((n, dim), dtype=np.float32)
    return out


def read_bandwidth(nbytes: int) -> float:
    """Bytes per second of a plain reduction over a buffer of ``nbytes`` (best of 5)."""
    buffer = np.ones(max(8, nbytes) // 8, dtype=np.uint64)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - started)
    return buffer.nbytes / best


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# --- 1-3. in process -------------------------------------------------------------------------


def bench_in_process(n: int, dim: int, k: int, queries: int, loop_queries: int, seed: int) -> dict:
    vecs = _vectors(n, dim, seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    skus = [f"sku-{i:07d}" for i in range(n)]
    rng = np.random.default_rng(seed + 1)
    picks = rng.choice(n, size=max(queries, loop_queries), replace=False)

    # The article's databases: a dict per kind, sku -> vector.
    top_db = {skus[i]: vecs[VectorKind.TOP][i] for i in range(n)}
    bottom_db = {skus[i]: vecs[VectorKind.BOTTOM][i] for i in range(n)}
    loop_times = []
    article_answers = {}
    for i in tqdm(picks[:loop_queries], desc=f"article loop N={n}", unit="query"):
        started = time.perf_counter()
        article_answers[int(i)] = similar_k(skus[i], k, top_db, bottom_db)
        loop_times.append(time.perf_counter() - started)

    norms = {kind: squared_norms(vecs[kind]) for kind in KINDS}
    ours_pair: list[float] = []
    ours_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    mismatches = 0
    for i in picks[:queries]:
        i = int(i)
        answers = {}
        for kind in KINDS:
            started = time.perf_counter()
            found = top_k(vecs[kind], norms[kind], ids, vecs[kind][i], k, np.array([i]))
            ours_kind[kind].append(time.perf_counter() - started)
            answers[kind] = [skus[r] for r in found.rows]
        ours_pair.append(ours_kind[VectorKind.TOP][-1] + ours_kind[VectorKind.BOTTOM][-1])
        if i in article_answers and (answers[VectorKind.TOP], answers[VectorKind.BOTTOM]) != tuple(
            article_answers[i]
        ):
            mismatches += 1

    matrix_bytes = vecs[VectorKind.TOP].nbytes
    bandwidth = read_bandwidth(matrix_bytes)
    floor = matrix_bytes / bandwidth
    del top_db, bottom_db, vecs
    single = {kind: statistics.median(t) for kind, t in ours_kind.items()}
    return {
        "n": n,
        "dim": dim,
        "k": k,
        "article_top_bottom_ms": _ms(statistics.median(loop_times)),
        "article_queries_timed": len(loop_times),
        "ours_top_bottom_ms": _ms(statistics.median(ours_pair)),
        "ours_queries_timed": len(ours_pair),
        "speedup_vs_article": round(
            statistics.median(loop_times) / statistics.median(ours_pair), 1
        ),
        "answers_differing_from_article": mismatches,
        "matrix_bytes_per_kind": matrix_bytes,
        "read_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "memory_floor_ms_per_kind": _ms(floor),
        "ours_single_query_ms": {kind: _ms(t) for kind, t in single.items()},
        "ours_vs_floor": {kind: round(t / floor, 2) for kind, t in single.items()},
    }


# --- the stack: a throw-away database and Redis databases --------------------------------------

VERSION = "bench-model"


@contextmanager
def bench_stack(args: argparse.Namespace) -> Iterator[Any]:
    from shared.config import load_settings
    from shared.redis_clients import redis_client
    from tests.support import database

    url = database.create_database()
    tmp = Path(tempfile.mkdtemp(prefix="visrec-bench-"))
    host = args.redis_url.rstrip("/")
    settings = load_settings(
        {
            "database_url": url,
            "redis_broker_url": f"{host}/{args.broker_db}",
            "redis_cache_url": f"{host}/{args.cache_db}",
            "media_root": tmp / "media",
            "log_json": False,
            "log_level": "WARNING",
            "device": "cpu",
            "fold_debounce_s": 0.0,
        },
        environ={},
    )
    # Flushing millions of keys takes longer than the pooled clients' usual timeout.
    scratch = [
        redis_client(settings.redis_cache_url, 30.0),
        redis_client(settings.redis_broker_url, 30.0),
    ]
    for client in scratch:
        client.flushdb()
    try:
        database.upgrade_head(url)
        yield settings
    finally:
        for client in scratch:
            client.flushdb(asynchronous=True)  # millions of keys: freed in the background
        database.drop_database(url)


def _connect(settings: Any) -> Any:
    import psycopg

    from shared.search.loader import libpq_url

    return psycopg.connect(libpq_url(settings.database_url))


def populate(
    settings: Any,
    n: int,
    dim: int,
    seed: int,
    *,
    log_changes: bool,
    prefix: str = "sku-",
    vectors: dict[str, np.ndarray] | None = None,
    norms_out: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """n items with a vector per kind, by binary COPY; returns their ids (in sku order).

    ``log_changes=False`` loads with the change-log triggers off (the lists are then written
    directly); True is what ingestion does: every row becomes a pending change.
    """
    rng = np.random.default_rng(seed)
    with _connect(settings) as conn:
        if not log_changes:
            conn.execute("ALTER TABLE embeddings DISABLE TRIGGER USER")
        with (
            conn.cursor() as cur,
            cur.copy("COPY items (sku, media_key, status) FROM STDIN") as copy,
        ):
            for i in range(n):
                copy.write_row((f"{prefix}{i:07d}", f"{i:064x}", ItemStatus.READY))
        ids = np.array(
            [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM items WHERE sku LIKE %s ORDER BY sku", (prefix + "%",)
                ).fetchall()
            ],
            dtype=np.int64,
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY embeddings (item_id, kind, model_version, dim, vector) FROM STDIN"
                " (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "text", "text", "int4", "bytea"])
            for kind in KINDS:
                for start in tqdm(
                    range(0, n, 10_000), desc=f"populate {kind}", unit="10k", mininterval=2
                ):
                    stop = min(n, start + 10_000)
                    if vectors is not None:
                        block = vectors[kind][start:stop]
                    else:
                        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
                    if norms_out is not None:
                        norms_out.setdefault(kind, np.empty(n))[start:stop] = np.einsum(
                            "ij,ij->i", block, block, dtype=np.float64
                        )
                    for offset in range(stop - start):
                        copy.write_row(
                            (int(ids[start + offset]), kind, VERSION, dim, block[offset].tobytes())
                        )
        if not log_changes:
            conn.execute("ALTER TABLE embeddings ENABLE TRIGGER USER")
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    return ids


def generated_lists(
    ids: np.ndarray, dim: int, seed: int, width: int, norms: np.ndarray | None = None
) -> Iterator[tuple[int, Any]]:
    """Lists of the right shape and distance scale for iid N(0, I) vectors (not exact).

    For such vectors ||q - x||^2 has mean ||q||^2 + d and spread sqrt(4||q||^2 + 2d) over x; a
    list's last entry sits at the quantile width/N of that spread (Gaussian tail), so a fold
    screens new items against thresholds like real ones.
    """
    from statistics import NormalDist

    from shared.search.lists import NeighbourList

    rng = np.random.default_rng(seed)
    n = ids.size
    z = NormalDist().inv_cdf(min(0.5, width / max(n, 1)))
    for i in range(n):
        q_sq = (
            float(norms[i]) if norms is not None else dim + rng.standard_normal() * np.sqrt(2 * dim)
        )
        spread = np.sqrt(4 * q_sq + 2 * dim)
        last = q_sq + dim + z * spread
        d2 = np.sort(last - rng.random(width) * spread)
        picks = rng.integers(0, n - 1, size=width)
        picks[picks >= i] += 1
        yield int(ids[i]), NeighbourList(ids[picks], d2, False)


def write_generated_lists(
    settings: Any,
    ids: np.ndarray,
    dim: int,
    seed: int,
    *,
    to_postgres: bool,
    norms: dict[str, np.ndarray] | None = None,
) -> str:
    """Lists for every item and kind, as fold 1; into PostgreSQL and/or a Redis generation."""
    from shared.redis_clients import redis_client
    from shared.search import lists_cache
    from shared.search.lists import LIST_WIDTH

    cache = redis_client(settings.redis_cache_url, 30.0)
    generation = f"bench-{int(time.time())}"
    with _connect(settings) as conn:
        fold_id = conn.execute(
            "INSERT INTO list_folds (changes) VALUES (0) RETURNING id"
        ).fetchone()[0]
        conn.execute("UPDATE list_changes SET fold_id = %s WHERE fold_id IS NULL", (fold_id,))
        for k_index, kind in enumerate(KINDS):
            pipe = cache.pipeline(transaction=False)
            rows = generated_lists(
                ids, dim, seed + k_index, LIST_WIDTH, None if norms is None else norms[kind]
            )
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY neighbour_lists (model_version, kind, item_id, neighbour_ids,"
                    " sq_distances, complete, fold_id) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["text", "text", "int8", "bytea", "bytea", "bool", "int8"])
                for count, (item_id, value) in enumerate(
                    tqdm(rows, total=ids.size, desc=f"lists {kind}", unit="list", mininterval=2)
                ):
                    if to_postgres:
                        copy.write_row(
                            (
                                VERSION,
                                kind,
                                item_id,
                                value.id_bytes(),
                                value.distance_bytes(),
                                False,
                                fold_id,
                            )
                        )
                    pipe.set(
                        lists_cache.list_key(generation, VERSION, kind, item_id), value.to_bytes()
                    )
                    if count % 2000 == 1999:
                        pipe.execute()
            pipe.execute()
        conn.commit()
    cache.set(lists_cache.applied_key(generation), str(fold_id))
    lists_cache.publish(cache, generation)
    return generation


# --- over HTTP ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"web server not answering 200 on {path} after {timeout}s")


def _load(port: int, n: int, k: int, clients: int, seconds: float, seed: int, prefix: str) -> dict:
    def path(rng: np.random.Generator) -> str:
        return f"/api/v1/items/{prefix}{int(rng.integers(n)):07d}/recommendations?k={k}"

    return _load_paths(port, clients, seconds, seed, path)


def _load_paths(
    port: int, clients: int, seconds: float, seed: int, make_path: Any, timeout: float = 60
) -> dict:
    """``clients`` threads, each on one keep-alive connection, GET ``make_path(rng)`` for
    ``seconds``: req/s (answered 200), p50, p99, errors."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(idx: int) -> None:
        rng = np.random.default_rng(seed + idx)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while time.monotonic() < stop_at:
            path = make_path(rng)
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            elapsed = time.perf_counter() - started
            if ok:
                latencies[idx].append(elapsed)
            else:
                errors[idx] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sorted(x for per in latencies for x in per)
    if not done:
        return {"requests": 0, "errors": sum(errors), "rps": 0.0, "p50_ms": None, "p99_ms": None}
    return {
        "requests": len(done),
        "errors": sum(errors),
        "rps": round(len(done) / seconds, 1),
        "p50_ms": _ms(done[len(done) // 2]),
        "p99_ms": _ms(done[min(len(done) - 1, int(len(done) * 0.99))]),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_all_processes(
    port: int, master: int, args: argparse.Namespace, prefix: str, timeout: float
) -> None:
    """Send requests until every gunicorn worker process is idle again after answering some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _load(port, 1000, args.k, args.web_workers * args.web_threads, 3.0, args.seed + 7, prefix)
        pids = _children(master)
        before = {pid: _cpu_seconds(pid) for pid in pids}
        time.sleep(2.0)
        # A process still loading its copy keeps burning CPU with no client asking.
        if len(pids) == args.web_workers and all(
            _cpu_seconds(pid) - before[pid] < 0.5 for pid in pids
        ):
            return
    raise RuntimeError("web processes did not settle")


@contextmanager
def gunicorn(settings: Any, args: argparse.Namespace, app: str) -> Iterator[tuple[int, Any]]:
    """``app`` served by gunicorn (``--web-workers`` x ``--web-threads``): (port, process)."""
    from shared.config import settings_to_env

    port = _free_port()
    env = {**os.environ, **settings_to_env(settings), "PYTHONPATH": str(ROOT)}
    # As the Procfile runs the web tier (${OPENBLAS_NUM_THREADS:-1}: empty counts as unset).
    env["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS") or "1"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.web_workers),
            "--threads",
            str(args.web_threads),
            "--timeout",
            "600",
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def serve_and_load(
    settings: Any, args: argparse.Namespace, app: str, n: int, prefix: str, warm_s: float
) -> dict:
    with gunicorn(settings, args, app) as (port, server):
        _wait_http(port, f"/api/v1/items/{prefix}0000001/recommendations?k={args.k}", warm_s)
        # Every process must be warm before the clock starts (the scan path loads its
        # matrices on its first request): ask until each worker process has answered once.
        _wait_all_processes(port, server.pid, args, prefix, warm_s)
        _load(port, n, args.k, args.clients, 5.0, args.seed + 99, prefix)
        result = _load(port, n, args.k, args.clients, args.http_seconds, args.seed, prefix)
        rss = [round(_rss_mb(pid), 1) for pid in _children(server.pid)]
        result.update({"n": n, "app": app, "web_rss_mb": rss, "clients": args.clients})
        return result


# --- product pages: a trivial endpoint, filters, families, a bulk PATCH ----------------------

BENCH_API_KEY = "bench-key"
# What each timed page asks besides ?k= (None: GET /healthz of the same app).
PAGE_QUERIES: dict[str, str | None] = {
    "healthz": None,
    "lists": "",
    "filter50": "&attr.in_stock=true",
    "filter1": "&attr.rare=true",
    "distinct": "&distinct=style",
}


def set_attributes(settings: Any, prefix: str = "sku-") -> None:
    """Every item's attributes, from its SKU's number i: ``in_stock`` (i even: 50% pass),
    ``rare`` (i % 100 = 37: 1%), ``style`` (i // 5: families of 5) and ``price``. The generated
    lists pick neighbours at random, so a filter passes the same share of every list."""
    with _connect(settings) as conn:
        conn.execute(
            "UPDATE items SET attributes = jsonb_build_object('in_stock', s.i %% 2 = 0,"
            " 'rare', s.i %% 100 = 37, 'style', 'style-' || (s.i / 5), 'price', 10 + s.i %% 90)"
            " FROM (SELECT id, substr(sku, %s)::int AS i FROM items WHERE sku LIKE %s) s"
            " WHERE items.id = s.id",
            (len(prefix) + 1, prefix + "%"),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE items")


@contextmanager
def query_worker(settings: Any) -> Iterator[Any]:
    """A real ``query`` worker (Procfile ``query``), for what the lists cannot answer."""
    from shared.queueing import QUEUE_QUERY
    from tests.support.worker import WorkerProcess

    log_path = Path(tempfile.mkdtemp(prefix="visrec-bench-query-")) / "worker.log"
    # No model bundle here: item searches need only the matrices, loaded on the first search.
    worker = WorkerProcess(
        settings.replace(log_level="INFO", preload_models=False), log_path, queues=(QUEUE_QUERY,)
    )
    worker.start(wait_s=300)
    try:
        yield worker
    finally:
        worker.stop()


def _page_path(name: str, n: int, k: int, prefix: str) -> Any:
    extra = PAGE_QUERIES[name]

    def path(rng: np.random.Generator) -> str:
        if extra is None:
            return "/healthz"
        return f"/api/v1/items/{prefix}{int(rng.integers(n)):07d}/recommendations?k={k}{extra}"

    return path


def _warm_worker(port: int, n: int, k: int, prefix: str, timeout: float) -> None:
    """Until a 1% filter answers: the worker loads its matrices on its first search (the web
    gives up on that one after QUERY_TIMEOUT_S; the worker finishes loading all the same)."""
    path = _page_path("filter1", n, k, prefix)(np.random.default_rng(0))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(1.0)
    raise RuntimeError(f"the query worker did not answer {path} within {timeout}s")


def bulk_patch(port: int, n: int, count: int, prefix: str, seed: int) -> dict:
    """One ``PATCH /api/v1/items`` of ``count`` items (a stock feed: in_stock and price)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(n, size=min(count, n), replace=False)
    body = json.dumps(
        {
            "items": [
                {
                    "sku": f"{prefix}{int(i):07d}",
                    "attributes": {
                        "in_stock": bool(rng.integers(2)),
                        "price": int(rng.integers(10, 100)),
                    },
                }
                for i in picks
            ]
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request(
        "PATCH",
        "/api/v1/items",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_API_KEY}"},
    )
    response = conn.getresponse()
    answer = response.read()
    seconds = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"bulk PATCH answered {response.status}: {answer[:300]!r}")
    return {
        "items": picks.size,
        "seconds": round(seconds, 3),
        **{key: json.loads(answer)[key] for key in ("updated", "not_found")},
    }


def phase_pages(args: argparse.Namespace, settings: Any, n: int, out: dict) -> None:
    """One server: /healthz, unfiltered pages, a 50% and a 1% filter, distinct over families
    of 5 (a real query worker for what the lists cannot answer), then one bulk PATCH."""
    set_attributes(settings)
    settings = settings.replace(api_keys=(BENCH_API_KEY,))
    with (
        query_worker(settings) as worker,
        gunicorn(settings, args, "web.wsgi:app") as (
            port,
            server,
        ),
    ):
        _wait_http(port, f"/api/v1/items/sku-0000001/recommendations?k={args.k}", 300)
        _wait_all_processes(port, server.pid, args, "sku-", 300)
        _warm_worker(port, n, args.k, "sku-", 900)
        _load(port, n, args.k, args.clients, 5.0, args.seed + 99, "sku-")
        pages: dict[str, dict] = {}
        for name in PAGE_QUERIES:
            path = _page_path(name, n, args.k, "sku-")
            # The web processes' own CPU per answer: what the read path costs in them, less
            # moved by whatever else shares the machine than req/s is.
            cpu = sum(_cpu_seconds(pid) for pid in _children(server.pid))
            # The query worker's too: a solo worker answers one search at a time, so its CPU
            # per answer is what the pages it answers queue behind.
            worker_cpu = _cpu_seconds(worker.proc.pid)
            pages[name] = _load_paths(port, args.clients, args.http_seconds, args.seed, path)
            cpu = sum(_cpu_seconds(pid) for pid in _children(server.pid)) - cpu
            worker_cpu = _cpu_seconds(worker.proc.pid) - worker_cpu
            count = pages[name]["requests"]
            pages[name].update(
                {
                    "n": n,
                    "clients": args.clients,
                    "web_cpu_ms_per_request": round(cpu * 1000 / count, 3) if count else None,
                    "worker_cpu_ms_per_request": round(worker_cpu * 1000 / count, 3)
                    if count
                    else None,
                }
            )
            print(json.dumps({name: pages[name]}), file=sys.stderr)
        rss = [round(_rss_mb(pid), 1) for pid in _children(server.pid)]
        pages["patch"] = bulk_patch(port, n, 10_000, "sku-", args.seed + 5)
        print(json.dumps({"patch": pages["patch"]}), file=sys.stderr)
    out["lists_100k"] = {**pages["lists"], "app": "web.wsgi:app", "web_rss_mb": rss}
    out["pages"] = pages


def page_summary(out: dict) -> dict:
    """The last JSON line's keys for the pages phase (None where it did not run)."""
    pages = out.get("pages", {})
    rps = {name: pages.get(name, {}).get("rps") for name in PAGE_QUERIES}
    return {
        "http_rps_healthz": rps["healthz"],
        "lists_over_healthz_rps": round(rps["lists"] / rps["healthz"], 2)
        if rps["lists"] and rps["healthz"]
        else None,
        "http_rps_filter50_100k": rps["filter50"],
        "http_p99_ms_filter1_100k": pages.get("filter1", {}).get("p99_ms"),
        "http_p99_ms_distinct_100k": pages.get("distinct", {}).get("p99_ms"),
        "patch_10k_s": pages.get("patch", {}).get("seconds"),
    }


def page_rows(out: dict) -> list[str]:
    pages = out.get("pages", {})
    if not pages:
        return []
    labels = {
        "healthz": "GET /healthz (same app: this stack's ceiling)",
        "lists": "product page, no filter",
        "filter50": "product page, attr.in_stock=true (50% pass)",
        "filter1": "product page, attr.rare=true (1% pass)",
        "distinct": "product page, distinct=style (families of 5)",
    }
    lines = []
    for name, label in labels.items():
        r = pages[name]
        lines.append(
            _row(
                f"{label}, N={r['n']}",
                f"{r['rps']} req/s",
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']},"
                f" {r['clients']} clients, web CPU {r['web_cpu_ms_per_request']} ms/request,"
                f" query worker CPU {r['worker_cpu_ms_per_request']} ms/request",
            )
        )
    for name in ("lists", "filter50"):
        if pages[name]["rps"] and pages["healthz"]["rps"]:
            ratio = round(pages[name]["rps"] / pages["healthz"]["rps"], 2)
            lines.append(_row(f"{name} / healthz req/s", f"{ratio}x"))
    patch = pages["patch"]
    lines.append(
        _row(
            f"PATCH /api/v1/items, {patch['items']} items",
            f"{patch['seconds']} s",
            f"updated {patch['updated']}, not found {patch['not_found']}",
        )
    )
    return lines


# --- phases ------------------------------------------------------------------------------------


# Tries of each kernel's product: the floor is the best rate seen (the machine's rate drifts
# by ~10% between minutes here; a slow moment must not make a lenient floor).
_RATE_TRIES = 7


def best_rate(*rates: dict) -> dict:
    """The fastest of several sgemm_rate measures (before and after the measured work)."""
    return max(rates, key=lambda rate: rate["gflops"])


def sgemm_rate(n: int, dim: int, block: int) -> dict:
    """The best float32 matrix-product rate on the build's shapes: numpy (BLAS) and torch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    q = x[:block]
    flops = 2.0 * block * n * dim
    best: dict[str, float] = {}
    best["numpy"] = min(_timed(lambda: q @ x.T) for _ in range(_RATE_TRIES))
    try:
        import torch

        xt, qt = torch.from_numpy(x), torch.from_numpy(q)
        best["torch"] = min(_timed(lambda: qt @ xt.T) for _ in range(_RATE_TRIES))
    except ImportError:
        pass
    rates = {name: flops / t for name, t in best.items()}
    kernel = max(rates, key=rates.get)
    return {
        "gflops": round(rates[kernel] / 1e9, 1),
        "kernel": kernel,
        "all": {k: round(v / 1e9, 1) for k, v in rates.items()},
    }


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def phase_build(args: argparse.Namespace, out: dict) -> None:
    from workers.search.fold import fold
    from workers.search.index import VectorIndex

    n, dim = args.n_build, args.dim
    with bench_stack(args) as settings:
        settings = settings.replace(list_block_rows=args.block_rows)
        rng = np.random.default_rng(args.seed)
        vectors = {kind: rng.standard_normal((n, dim), dtype=np.float32) for kind in KINDS}
        populate(settings, n, dim, args.seed, log_changes=True, vectors=vectors)
        before = sgemm_rate(n, dim, args.block_rows)
        index = VectorIndex()
        report = fold(settings, index=index, reason="bench build")
        del index
        rate = best_rate(before, sgemm_rate(n, dim, args.block_rows))
        floor_s = len(KINDS) * 2.0 * n * n * dim / (rate["gflops"] * 1e9)
        out["build"] = {
            "n": n,
            "kinds": len(KINDS),
            "fold_s": round(report.seconds, 2),
            "compute_s": round(report.compute_seconds, 2),
            # Where the rest went: matrices loaded, lists written and committed, the cache.
            "phases_s": {name: round(t, 2) for name, t in report.phases.items()},
            "floor_s": round(floor_s, 2),
            "sgemm": rate,
            "lists": report.lists_written,
        }
        print(json.dumps({"build": out["build"]}), file=sys.stderr)
        if "latency" not in args.skip:
            phase_latency(args, settings, vectors, out)


def phase_latency(args: argparse.Namespace, settings: Any, vectors: dict, out: dict) -> None:
    """Seconds from a batch's commit until every list a new item belongs to holds it."""
    from shared.redis_clients import redis_client
    from shared.search import lists_cache
    from shared.search.lists import from_bytes
    from shared.search.scheduling import request_fold
    from tests.support.worker import WorkerProcess

    log_path = Path(tempfile.mkdtemp(prefix="visrec-bench-worker-")) / "worker.log"
    from shared.queueing import QUEUE_LISTS

    # The process that folds lists in a stack (Procfile ``lists``: queue lists).
    worker = WorkerProcess(settings.replace(log_level="INFO"), log_path, queues=(QUEUE_LISTS,))
    worker.start(wait_s=300)
    cache = redis_client(settings.redis_cache_url, 30.0)
    try:

        def folded() -> bool:
            with _connect(settings) as conn:
                return not conn.execute(
                    "SELECT 1 FROM list_changes WHERE fold_id IS NULL LIMIT 1"
                ).fetchone()

        # Warm the worker: a first small change makes it load the matrices and lists.
        rng = np.random.default_rng(args.seed + 7)
        warm = {kind: vectors[kind][:1] + 0.5 for kind in KINDS}
        populate(settings, 1, args.dim, 0, log_changes=True, prefix="warm-", vectors=warm)
        request_fold(settings, reason="bench warm-up")
        deadline = time.monotonic() + 600
        while not folded() and time.monotonic() < deadline:
            time.sleep(0.2)
        batch = 16
        anchors = rng.choice(args.n_build, size=batch, replace=False)
        twins = {
            kind: (vectors[kind][anchors] + 1e-3 * rng.standard_normal((batch, args.dim))).astype(
                np.float32
            )
            for kind in KINDS
        }
        with _connect(settings) as conn:
            anchor_ids = [
                conn.execute(
                    "SELECT id FROM items WHERE sku = %s", (f"sku-{int(a):07d}",)
                ).fetchone()[0]
                for a in anchors
            ]
        committed = time.perf_counter()
        new_ids = populate(
            settings, batch, args.dim, 0, log_changes=True, prefix="new-", vectors=twins
        )
        request_fold(settings, reason="bench batch")
        waiting = {
            (kind, int(a), int(c))
            for kind in KINDS
            for a, c in zip(anchor_ids, new_ids, strict=True)
        }
        while waiting and time.perf_counter() - committed < 600:
            generation = lists_cache.read_pointer(cache)
            for kind, anchor, twin in list(waiting):
                value = (
                    cache.get(lists_cache.list_key(generation, VERSION, kind, anchor))
                    if generation
                    else None
                )
                if value is not None and from_bytes(value).ids[:1].tolist() == [twin]:
                    waiting.discard((kind, anchor, twin))
            time.sleep(0.02)
        out["latency"] = {
            "batch": batch,
            "n": args.n_build,
            "seconds_to_lists": round(time.perf_counter() - committed, 2) if not waiting else None,
        }
        print(json.dumps({"latency": out["latency"]}), file=sys.stderr)
    finally:
        worker.stop()


def phase_http_and_fold(args: argparse.Namespace, out: dict) -> None:
    n = args.n_http
    with bench_stack(args) as settings:
        started = time.perf_counter()
        norms: dict[str, np.ndarray] = {}
        ids = populate(settings, n, args.dim, args.seed, log_changes=False, norms_out=norms)
        write_generated_lists(settings, ids, args.dim, args.seed, to_postgres=True, norms=norms)
        out["http_setup_s"] = round(time.perf_counter() - started, 1)
        if "http" not in args.skip:
            if "pages" in args.skip:
                out["lists_100k"] = serve_and_load(settings, args, "web.wsgi:app", n, "sku-", 300)
            else:
                phase_pages(args, settings, n, out)
            print(json.dumps({"lists": out["lists_100k"]}), file=sys.stderr)
        if "http" not in args.skip and "scan" not in args.skip:
            out["scan_100k"] = serve_and_load(
                settings, args, "bench.scan_baseline:app", n, "sku-", 1200
            )
            print(json.dumps({"scan": out["scan_100k"]}), file=sys.stderr)
        if "fold" not in args.skip:
            phase_fold(args, settings, out)
        if "backlog" not in args.skip:
            from bench.fold_backlog import phase_backlog

            phase_backlog(args, settings, ids, VERSION, out)
            print(json.dumps({"backlog": out["backlog"]}), file=sys.stderr)


def phase_fold(args: argparse.Namespace, settings: Any, out: dict) -> None:
    from workers.search.fold import fold
    from workers.search.index import VectorIndex

    index = VectorIndex()
    populate(settings, 1, args.dim, args.seed + 1, log_changes=True, prefix="warm-")
    warm = fold(settings, index=index, reason="bench warm-up")  # loads matrices and lists
    populate(settings, 64, args.dim, args.seed + 2, log_changes=True, prefix="batch-")
    report = fold(settings, index=index, reason="bench batch of 64")
    out["fold"] = {
        "n": args.n_http,
        "batch": 64,
        "seconds": round(report.seconds, 3),
        "compute_s": round(report.compute_seconds, 3),
        "lists_written": report.lists_written,
        "cache": report.cache,
        "phases": report.as_dict()["phases"],
        "warm_up_s": round(warm.seconds, 1),
    }
    print(json.dumps({"fold": out["fold"]}), file=sys.stderr)


def phase_big(args: argparse.Namespace, out: dict) -> None:
    n = args.n_big
    with bench_stack(args) as settings:
        # Reads never touch vectors (no pending change): stored 1-d to fit this machine.
        ids = populate(settings, n, 1, args.seed, log_changes=False, prefix="big-")
        write_generated_lists(settings, ids, args.dim, args.seed, to_postgres=False)
        out["lists_1m"] = serve_and_load(settings, args, "web.wsgi:app", n, "big-", 300)
        print(json.dumps({"big": out["lists_1m"]}), file=sys.stderr)


def phase_versions(args: argparse.Namespace, out: dict) -> None:
    from bench.versions import measure

    with bench_stack(args) as settings:
        out["versions"] = measure(
            settings, args.n_versions, args.dim, args.versions_batch, args.switches, args.seed
        )
    print(json.dumps({"versions": out["versions"]}), file=sys.stderr)


def _versions_rows(versions: dict) -> list[str]:
    if not versions:
        return []
    return [
        _row(
            f"build of a version at N={versions['n']} x {len(KINDS)} kinds (d={versions['dim']})",
            f"{versions['build_items_per_s']} items/s",
            f"{versions['build_s']} s: catch-up {versions['build_catch_up_s']} s, lists"
            f" {versions['build_lists_s']} s; complete {versions['build_complete']}",
        ),
        _row(
            "POST /api/v1/models/<v>/serve (median of the switches)",
            f"{versions['serve_switch_ms']} ms",
            f"worst {versions['serve_switch_max_ms']} ms of {versions['switches']}; the"
            f" statement alone {versions['switch_statement_ms']} ms",
        ),
        _row(
            "a product page shows the new version, after the switch",
            f"{versions['page_shows_switch_ms_max']} ms",
            "the longest over the switches (target: within 1 s)",
        ),
    ]


def phase_article(args: argparse.Namespace, out: dict) -> None:
    sizes = [int(s) for s in args.article_sizes.split(",") if s]
    out["article"] = [bench_in_process(n, args.dim, args.k, 30, 3, args.seed) for n in sizes]


def _row(label: str, value: Any, note: str = "") -> str:
    return f"{label:<52} {value!s:>16}  {note}"


def _backlog_keys(backlog: dict) -> dict:
    return {
        "fold_10k_changes_peak_mb_100k": backlog.get("peak_less_matrices_mb"),
        "fold_lock_wait_ms_max": backlog.get("wait_ms_max"),
    }


def _backlog_rows(backlog: dict) -> list[str]:
    if not backlog:
        return []
    return [
        _row(
            f"fold of {backlog['items']} new items at N={backlog['n']}: peak RSS - matrices",
            f"{backlog['peak_less_matrices_mb']} MB",
            f"lists worker: peak {backlog['peak_rss_mb']} MB, matrices and lists"
            f" {backlog['matrices_mb']} MB before the fold, plus"
            f" {backlog.get('matrices_grown_mb', '-')} MB of new rows and lists (peak less the"
            f" matrices before: {backlog.get('peak_less_matrices_before_mb', '-')} MB; RSS after"
            f" less start {backlog.get('rss_after_less_start_mb', '-')} MB), idle"
            f" {backlog['worker_cold_mb']} MB; query worker's"
            f" matrices {backlog.get('query_worker_matrices_mb', '-')} MB; fold"
            f" {backlog['fold_s']} s",
        ),
        _row(
            "longest a search waited on that fold",
            f"{backlog['wait_ms_max']} ms",
            f"{backlog['searches_during_fold']} searches during it (query worker), p50"
            f" {backlog.get('search_ms_during_fold_p50', '-')} ms, longest"
            f" {backlog['search_ms_during_fold_max']} ms; {backlog['search_ms_no_fold_p50']} ms"
            f" with no fold, {backlog.get('search_ms_pending_no_fold_p50', '-')} ms with the"
            " backlog pending and no fold (the longest over that:"
            f" {backlog.get('wait_over_pending_ms_max', '-')} ms)",
        ),
    ]


def report(out: dict) -> dict:
    lists, scan, big = out.get("lists_100k", {}), out.get("scan_100k", {}), out.get("lists_1m", {})
    build, fold, latency = out.get("build", {}), out.get("fold", {}), out.get("latency", {})
    summary = {
        "http_rps_lists_100k": lists.get("rps"),
        "http_rps_scan_100k": scan.get("rps"),
        "lists_over_scan_rps_100k": round(lists["rps"] / scan["rps"], 1)
        if lists.get("rps") and scan.get("rps")
        else None,
        "http_p99_ms_lists_100k": lists.get("p99_ms"),
        "http_p99_ms_lists_1m": big.get("p99_ms"),
        "web_rss_mb_100k": max(lists.get("web_rss_mb") or [0]) or None,
        "web_rss_mb_1m": max(big.get("web_rss_mb") or [0]) or None,
        "lists_build_over_floor_20k": round(build["fold_s"] / build["floor_s"], 2)
        if build
        else None,
        "fold_64_s_100k": fold.get("seconds"),
        **_backlog_keys(out.get("backlog", {})),
        "build_100k_items_per_s": out.get("versions", {}).get("build_items_per_s"),
        "serve_switch_ms": out.get("versions", {}).get("serve_switch_ms"),
        "http_errors": sum(x.get("errors", 0) for x in (lists, scan, big)),
        **page_summary(out),
    }
    lines = ["", "visrec recommendations benchmark (one run, this machine)", ""]
    for name, r in (
        (f"lists, N={lists.get('n', 0)}", lists),
        (f"scan (before), N={scan.get('n', 0)}", scan),
        (f"lists, N={big.get('n', 0)} (lists generated in Redis)", big),
    ):
        if r:
            lines.append(
                _row(
                    f"HTTP {name}",
                    f"{r['rps']} req/s",
                    f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']},"
                    f" web RSS {r['web_rss_mb']} MB",
                )
            )
    lines.extend(page_rows(out))
    if summary["lists_over_scan_rps_100k"]:
        lines.append(_row("lists / scan req/s", f"{summary['lists_over_scan_rps_100k']}x"))
    if build:
        lines.append(
            _row(
                f"full computation N={build['n']} x {build['kinds']} kinds",
                f"{build['fold_s']} s",
                f"compute {build['compute_s']} s; floor {build['floor_s']} s at"
                f" {build['sgemm']['gflops']} GFLOP/s ({build['sgemm']['kernel']});"
                f" ratio {summary['lists_build_over_floor_20k']}x",
            )
        )
    if fold:
        lines.append(
            _row(
                f"fold of {fold['batch']} new items at N={fold['n']}",
                f"{fold['seconds']} s",
                f"compute {fold['compute_s']} s, {fold['lists_written']} lists written,"
                f" cache {fold['cache']}",
            )
        )
    lines.extend(_backlog_rows(out.get("backlog", {})))
    lines.extend(_versions_rows(out.get("versions", {})))
    if latency:
        lines.append(
            _row(
                f"batch of {latency['batch']} committed -> in every list (worker)",
                f"{latency['seconds_to_lists']} s",
                f"N={latency['n']}, real Celery worker, fold requested as ingestion does",
            )
        )
    print("\n".join(lines))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-http", type=int, default=100_000)
    parser.add_argument("--n-big", type=int, default=1_000_000)
    parser.add_argument("--n-build", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block-rows", type=int, default=512)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--broker-db", type=int, default=12)
    parser.add_argument("--cache-db", type=int, default=13)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backlog-items", type=int, default=10_000)
    parser.add_argument("--backlog-searches", type=int, default=5)
    parser.add_argument("--n-versions", type=int, default=100_000)
    parser.add_argument("--versions-batch", type=int, default=64)
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated: build,latency,http,pages,scan,fold,backlog,big,versions",
    )
    parser.add_argument(
        "--article-sizes", default="", help="also time the article's loop at these N"
    )
    args = parser.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    out: dict[str, Any] = {}
    if "build" not in args.skip:
        phase_build(args, out)
    if not {"http", "fold", "backlog"} <= args.skip:
        phase_http_and_fold(args, out)
    if "big" not in args.skip:
        phase_big(args, out)
    if "versions" not in args.skip:
        phase_versions(args, out)
    if args.article_sizes:
        phase_article(args, out)
    summary = report(out)
    print(json.dumps({"details": out}, default=str), file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
