"""The Redis generations: chunking, atomic switch, a lost cache, several web processes."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from shared.search.rebuild import rebuild_count

from shared import task_names
from shared.search import matrix_cache
from tests.recommendations.helpers import add_catalogue, brute_force, stored_vectors


def _catalogue(n: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((3, n, dim)).astype(np.float32)
    return {
        f"s{i:03d}": {"full": vecs[0, i], "top": vecs[1, i], "bottom": vecs[2, i]} for i in range(n)
    }


def _rebuild_messages(broker_redis) -> list[dict]:
    """Rebuild tasks waiting on the broker's ``default`` queue (Celery's Redis transport)."""
    out = []
    for raw in broker_redis.lrange("default", 0, -1):
        message = json.loads(raw)
        if message.get("headers", {}).get("task") == task_names.REBUILD_CACHE:
            out.append(message)
    return out


def test_matrices_are_chunked_and_read_back_exactly(settings, db_session, cache_redis):
    from shared.search.rebuild import rebuild_cache

    add_catalogue(db_session, _catalogue(50, 32))
    small = settings.replace(cache_chunk_bytes=7 * 32 * 4)  # 7 rows per chunk
    result = rebuild_cache(small, reason="test")
    meta = matrix_cache.read_meta(cache_redis, result.generation)
    info = meta["versions"][result.current_version]["top"]
    assert info["rows"] == 50 and info["chunks"] == 8 and info["chunk_rows"] == 7
    for key in meta["keys"]:
        assert cache_redis.strlen(key) <= small.cache_chunk_bytes or not key.count(":vec:")
    loaded = matrix_cache.load_generation(cache_redis, result.generation)
    matrix = loaded.matrix(result.current_version, "top")
    rows = sorted(stored_vectors(db_session, "top"))
    np.testing.assert_array_equal(matrix.vectors, np.stack([r[2] for r in rows]))
    assert matrix.skus == [r[1] for r in rows]
    assert matrix.item_ids.tolist() == [r[0] for r in rows]


def test_empty_cache_without_a_copy_is_503_then_one_rebuild(client, db_session, broker_redis):
    add_catalogue(db_session, _catalogue(10, 8))
    responses = [client.get("/api/v1/items/s001/recommendations") for _ in range(5)]
    for response in responses:
        assert response.status_code == 503
        assert response.json["code"] == "cache_unavailable"
        assert int(response.headers["Retry-After"]) > 0
        time.sleep(0.15)  # past the pointer TTL: every request looks again
    assert len(_rebuild_messages(broker_redis)) == 1


def test_flushing_the_cache_while_requests_run(
    app, db_session, cache_redis, broker_redis, rebuild, wait_for_generation
):
    add_catalogue(db_session, _catalogue(80, 16, seed=5))
    first = rebuild()["generation"]
    skus = ["s003", "s040", "s079"]
    expected = {}
    for sku in skus:
        for kind in ("top", "bottom", "full"):
            rows = stored_vectors(db_session, kind)
            mine = next(r for r in rows if r[1] == sku)
            expected[sku, kind] = [s for s, _ in brute_force(rows, mine[2], 10, mine[0])]
    errors: list[str] = []
    answered = [0]
    stop = threading.Event()

    def hammer(sku: str) -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.get(f"/api/v1/items/{sku}/recommendations")
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.json}")
                continue
            for kind, hits in response.json["results"].items():
                if [h["sku"] for h in hits] != expected[sku, kind]:
                    errors.append(f"wrong answer for {sku}/{kind}")
            answered[0] += 1

    client = app.test_client()
    wait_for_generation(client, "/api/v1/items/s003/recommendations", first)
    threads = [threading.Thread(target=hammer, args=(s,)) for s in skus]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        cache_redis.flushdb()
        deadline = time.monotonic() + 10
        while not _rebuild_messages(broker_redis) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # requests keep noticing the empty cache: still only one request
        messages = _rebuild_messages(broker_redis)
        assert len(messages) == 1
        # The worker's part, in this process: run the one queued rebuild.
        second = rebuild(reason="cache_empty")["generation"]
        wait_for_generation(client, "/api/v1/items/s003/recommendations", second)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert answered[0] > 10
    assert rebuild_count(app.config["SETTINGS"]) == 2  # the first build and one after the flush
    assert len(_rebuild_messages(broker_redis)) == 1  # nothing more was asked for meanwhile


def test_two_web_processes_see_the_same_generation(
    settings, db_session, cache_redis, broker_redis, rebuild, wait_for_generation
):
    from web import create_app

    apps = [create_app(settings), create_app(settings)]
    clients = [a.test_client() for a in apps]
    add_catalogue(db_session, _catalogue(20, 8))
    first = rebuild()["generation"]
    url = "/api/v1/items/s001/recommendations?k=3"
    bodies = [wait_for_generation(c, url, first).json for c in clients]
    assert bodies[0] == bodies[1]
    add_catalogue(db_session, {"z-new": {"full": np.zeros(8, np.float32)}})
    second = rebuild()["generation"]
    assert second != first
    bodies = [wait_for_generation(c, url, second).json for c in clients]
    assert bodies[0] == bodies[1]
    assert matrix_cache.read_pointer(cache_redis) == second
