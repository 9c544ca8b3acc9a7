"""Benchmark: "you may also like" at N catalogue items, against the article's loop, in one run.

    python -m bench.recommend --sizes 10000,100000 [--http-sizes 10000] [--http-seconds 20]

Per N (random 2048-d float32 vectors for top, bottom and full, generated in memory):

1. the article's ``similar_k`` (dicts of vectors, a Python loop calling a Euclidean distance per
   item, a sorted dict), reimplemented faithfully, for top and bottom; at large N only a sample
   of queries is timed (it is slow: the table says how many);
2. this project's in-process search (shared.search.knn.top_k) for the same queries;
3. the memory floor: matrix bytes / read bandwidth measured now on a buffer of the same size
   (best of 5 of a plain reduction over a uint64 view), per kind, against one query's time;
4. for the sizes in ``--http-sizes``: a throw-away PostgreSQL database populated by COPY, the
   cache rebuilt, gunicorn on 127.0.0.1, and 32 client threads for ``--http-seconds``: p50/p99
   latency of ``GET /api/v1/items/<sku>/recommendations`` and errors counted.

Prints a table, ratios against the article's loop, and a JSON object as the last line. Not a
test: numbers depend on the machine and on what else runs on it.
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
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.search.knn import squared_norms, top_k

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("top", "bottom", "full")


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
        else:
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
        else:
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
    top_db = {skus[i]: vecs["top"][i] for i in range(n)}
    bottom_db = {skus[i]: vecs["bottom"][i] for i in range(n)}
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
        ours_pair.append(ours_kind["top"][-1] + ours_kind["bottom"][-1])
        if i in article_answers and (answers["top"], answers["bottom"]) != tuple(
            article_answers[i]
        ):
            mismatches += 1

    matrix_bytes = vecs["top"].nbytes
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


# --- 4. over HTTP ----------------------------------------------------------------------------


def _populate(database_url: str, n: int, dim: int, seed: int, version: str) -> None:
    import psycopg

    from shared.search.loader import libpq_url

    vecs = _vectors(n, dim, seed)
    with psycopg.connect(libpq_url(database_url)) as conn:
        with (
            conn.cursor() as cur,
            cur.copy("COPY items (sku, media_key, status) FROM STDIN") as copy,
        ):
            for i in range(n):
                copy.write_row((f"sku-{i:07d}", f"{i:064x}", "ready"))
        ids = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY sku").fetchall()]
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY embeddings (item_id, kind, model_version, dim, vector) FROM STDIN"
                " (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "text", "text", "int4", "bytea"])
            for kind in KINDS:
                for i in tqdm(range(n), desc=f"populate {kind}", unit="row", mininterval=2):
                    copy.write_row((ids[i], kind, version, dim, vecs[kind][i].tobytes()))
        conn.commit()
        conn.execute("ANALYZE items")
        conn.execute("ANALYZE embeddings")
        conn.commit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"web server not answering 200 on {path} after {timeout}s")


def _load(port: int, n: int, k: int, clients: int, seconds: float, seed: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(idx: int) -> None:
        rng = np.random.default_rng(seed + idx)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop_at:
            path = f"/api/v1/items/sku-{int(rng.integers(n)):07d}/recommendations?k={k}"
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
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
        return {"requests": 0, "errors": sum(errors)}
    return {
        "requests": len(done),
        "errors": sum(errors),
        "rps": round(len(done) / seconds, 1),
        "p50_ms": _ms(done[len(done) // 2]),
        "p99_ms": _ms(done[min(len(done) - 1, int(len(done) * 0.99))]),
    }


def bench_http(n: int, dim: int, k: int, clients: int, seconds: float, seed: int, args) -> dict:
    import redis
    from shared.search.rebuild import rebuild_cache

    from shared.config import load_settings, settings_to_env
    from tests.support import database

    url = database.create_database()
    tmp = Path(tempfile.mkdtemp(prefix="visrec-bench-"))
    redis_host = args.redis_url.rstrip("/")
    settings = load_settings(
        {
            "database_url": url,
            "redis_broker_url": f"{redis_host}/{args.broker_db}",
            "redis_cache_url": f"{redis_host}/{args.cache_db}",
            "media_root": tmp / "media",
            "log_json": False,
            "log_level": "WARNING",
        },
        environ={},
    )
    scratch = [
        redis.Redis.from_url(settings.redis_cache_url),
        redis.Redis.from_url(settings.redis_broker_url),
    ]
    for client in scratch:
        client.flushdb()
    server = None
    try:
        database.upgrade_head(url)
        started = time.perf_counter()
        _populate(url, n, dim, seed, "bench-model")
        populate_s = time.perf_counter() - started
        rebuilt = rebuild_cache(settings, reason="bench")
        port = _free_port()
        env = {**os.environ, **settings_to_env(settings), "PYTHONPATH": str(ROOT)}
        # Concurrent requests parallelise across threads; a multi-threaded BLAS per request
        # would only oversubscribe the cores (recommended for the Procfile's web process too).
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
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
                "120",
                "web.wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Every worker process loads its copy on its first request: warm them all up.
        _wait_http(port, f"/api/v1/items/sku-0000001/recommendations?k={k}", 300)
        _load(port, n, k, clients, 3.0, seed + 99)
        result = _load(port, n, k, clients, seconds, seed)
        result.update(
            {
                "n": n,
                "clients": clients,
                "seconds": seconds,
                "populate_s": round(populate_s, 1),
                "rebuild_s": round(rebuilt.seconds, 2),
                "web_workers": args.web_workers,
                "web_threads": args.web_threads,
            }
        )
        return result
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        for client in scratch:
            client.flushdb()
            client.close()
        database.drop_database(url)


def _table(rows: list[dict], http_rows: list[dict]) -> str:
    lines = [
        f"{'N':>8} {'article top+bottom':>19} {'ours top+bottom':>16} {'speedup':>8}"
        f" {'floor/kind':>11} {'ours/kind (t,b,f)':>26} {'x floor':>16} {'BW GB/s':>8}",
    ]
    for r in rows:
        per = r["ours_single_query_ms"]
        vs = r["ours_vs_floor"]
        lines.append(
            f"{r['n']:>8} {r['article_top_bottom_ms']:>17.1f}ms {r['ours_top_bottom_ms']:>14.2f}ms"
            f" {r['speedup_vs_article']:>7.0f}x {r['memory_floor_ms_per_kind']:>9.2f}ms"
            f" {per['top']:>7.2f}/{per['bottom']:.2f}/{per['full']:.2f} ms"
            f" {vs['top']:>5.2f}/{vs['bottom']:.2f}/{vs['full']:.2f}"
            f" {r['read_bandwidth_gb_s']:>8.2f}"
        )
        lines.append(
            f"{'':>8} (article: median of {r['article_queries_timed']} queries;"
            f" ours: median of {r['ours_queries_timed']}; answers differing from the"
            f" article's: {r['answers_differing_from_article']})"
        )
    for h in http_rows:
        lines.append(
            f"HTTP N={h['n']}: {h['clients']} clients x {h['seconds']:.0f}s -> {h['requests']}"
            f" requests ({h.get('rps', 0)}/s), p50 {h.get('p50_ms')} ms, p99 {h.get('p99_ms')} ms,"
            f" errors {h['errors']} (gunicorn {h['web_workers']}x{h['web_threads']} threads;"
            f" rebuild {h['rebuild_s']} s, populate {h['populate_s']} s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--http-sizes", default="10000", help="sizes also served over HTTP")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=30, help="in-process queries per size")
    parser.add_argument(
        "--loop-queries", default="10,3", help="article-loop queries per size (last value repeats)"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--broker-db", type=int, default=12)
    parser.add_argument("--cache-db", type=int, default=13)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    http_sizes = {int(s) for s in args.http_sizes.split(",") if s}
    loops = [int(s) for s in args.loop_queries.split(",") if s]

    rows, http_rows = [], []
    for idx, n in enumerate(sizes):
        loop_q = loops[min(idx, len(loops) - 1)]
        rows.append(bench_in_process(n, args.dim, args.k, args.queries, loop_q, args.seed))
        print(json.dumps(rows[-1]), file=sys.stderr)
        if n in http_sizes:
            http_rows.append(
                bench_http(n, args.dim, args.k, args.clients, args.http_seconds, args.seed, args)
            )
            print(json.dumps(http_rows[-1]), file=sys.stderr)
    print(_table(rows, http_rows))
    print(json.dumps({"in_process": rows, "http": http_rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
