"""The lists cache: read back exactly, lost and reloaded from PostgreSQL (never recomputed),
shared by several web processes (a paused cache: tests/faults/test_cache_paused.py)."""

from __future__ import annotations

import json
import threading

import numpy as np
from sqlalchemy import func, select

from shared import task_names
from shared.models import ListFold, NeighbourList
from shared.queueing import QUEUE_LISTS
from shared.search import lists_cache
from shared.search.lists import from_bytes, from_columns
from shared.vocabulary import DISPLAY_ORDER as KINDS
from tests.recommendations.helpers import add_catalogue, expected
from tests.support.waiting import wait_until


def _catalogue(n: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((3, n, dim)).astype(np.float32)
    return {
        f"s{i:03d}": {"full": vecs[0, i], "top": vecs[1, i], "bottom": vecs[2, i]} for i in range(n)
    }


def _reload_messages(broker_redis) -> list[dict]:
    """Reload tasks waiting on the broker's ``lists`` queue (Celery's Redis transport)."""
    out = []
    for raw in broker_redis.lrange(QUEUE_LISTS, 0, -1):
        message = json.loads(raw)
        if message.get("headers", {}).get("task") == task_names.RELOAD_LISTS_CACHE:
            out.append(message)
    return out


def _folds(db_session) -> int:
    db_session.rollback()
    return db_session.scalar(select(func.count()).select_from(ListFold))


def test_lists_in_the_cache_equal_the_lists_in_postgresql(db_session, cache_redis, fold):
    add_catalogue(db_session, _catalogue(50, 16))
    report = fold()
    assert report["changes"] == 150 and report["cache"] == "reloaded"
    generation = lists_cache.read_pointer(cache_redis)
    assert lists_cache.read_applied(cache_redis, generation) == report["fold_id"]
    rows = db_session.scalars(select(NeighbourList)).all()
    assert len(rows) == 150
    for row in rows:
        key = lists_cache.list_key(generation, row.model_version, row.kind, row.item_id)
        cached = from_bytes(cache_redis.get(key))
        stored = from_columns(row.neighbour_ids, row.sq_distances, row.complete)
        np.testing.assert_array_equal(cached.ids, stored.ids)
        np.testing.assert_array_equal(cached.sq_distances, stored.sq_distances)
        assert cached.complete and len(cached) == 49


def test_a_cold_cache_answers_from_postgresql_and_asks_for_one_reload(
    settings, make_app, db_session, cache_redis, broker_redis, fold
):
    # No pointer TTL: every request looks at the cache again, and still only one reload is asked.
    client = make_app(settings.replace(cache_pointer_ttl_s=0.0)).test_client()
    add_catalogue(db_session, _catalogue(30, 8))
    fold()
    cache_redis.flushdb()
    for sku in ("s001", "s002", "s003", "s004", "s005"):
        response = client.get(f"/api/v1/items/{sku}/recommendations?k=5")
        assert response.status_code == 200
        for kind in KINDS:
            want = [s for s, _ in expected(db_session, sku, kind, 5)]
            assert [h["sku"] for h in response.json["results"][kind]] == want
        assert "X-Lists-Generation" not in response.headers
    assert len(_reload_messages(broker_redis)) == 1


def test_flushing_the_cache_under_load_reloads_without_recomputing(
    app, db_session, cache_redis, broker_redis, fold, wait_for_generation
):
    from workers.tasks.lists import reload_cache

    add_catalogue(db_session, _catalogue(80, 16, seed=5))
    fold()
    folds_before = _folds(db_session)
    skus = ["s003", "s040", "s079"]
    want = {
        (sku, kind): [s for s, _ in expected(db_session, sku, kind, 10)]
        for sku in skus
        for kind in KINDS
    }
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
                if [h["sku"] for h in hits] != want[sku, kind]:
                    errors.append(f"wrong answer for {sku}/{kind}")
            answered[0] += 1

    def served(more: int) -> None:
        # Counted answers, not seconds: a loaded machine answers as many, later.
        target = answered[0] + more
        wait_until(
            lambda: answered[0] >= target or errors,
            120,
            interval=0.02,
            message=lambda: f"{more} more answers; {answered[0]} so far",
        )

    threads = [threading.Thread(target=hammer, args=(s,)) for s in skus]
    for t in threads:
        t.start()
    try:
        served(10)
        cache_redis.flushdb()
        wait_until(
            lambda: _reload_messages(broker_redis), 10, interval=0.05, message="a reload message"
        )
        served(30)  # requests keep finding the cache empty: still only one request
        assert len(_reload_messages(broker_redis)) == 1
        served_cold = answered[0]
        # The worker's part, in this process: run the one queued reload.
        result = reload_cache.run(reason="cache empty")
        wait_for_generation(
            app.test_client(), "/api/v1/items/s003/recommendations", result["generation"]
        )
        served(10)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert answered[0] > served_cold > 0
    assert result["lists"] == 240
    assert _folds(db_session) == folds_before  # copied from PostgreSQL, not recomputed
    assert len(_reload_messages(broker_redis)) == 1  # nothing more was asked for meanwhile


def test_two_web_apps_see_the_same_generation(
    settings, db_session, cache_redis, broker_redis, fold, wait_for_generation
):
    from web import create_app

    clients = [create_app(settings).test_client(), create_app(settings).test_client()]
    add_catalogue(db_session, _catalogue(20, 8))
    first = fold()
    generation = lists_cache.read_pointer(cache_redis)
    url = "/api/v1/items/s001/recommendations?k=3"
    bodies = [wait_for_generation(c, url, generation).json for c in clients]
    assert bodies[0] == bodies[1]
    add_catalogue(db_session, {"z-new": {"full": np.zeros(8, np.float32)}})
    second = fold()
    assert second["fold_id"] > first["fold_id"] and second["cache"] == "applied"
    assert lists_cache.read_applied(cache_redis, generation) == second["fold_id"]
    bodies = [c.get(url).json for c in clients]
    assert bodies[0] == bodies[1]
