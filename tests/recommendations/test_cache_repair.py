"""The lists cache repairs itself: evicted lists are written back into the live generation, a
generation left behind a fold is brought up to date with no new change, and both hold the fold
lock, so a repair never writes lists that disagree with the generation's ``applied``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
from sqlalchemy import func, select

from shared import task_names
from shared.config import set_settings
from shared.locks import FOLD_LOCK_KEY
from shared.models import Item, ListFold, NeighbourList
from shared.queueing import QUEUE_LISTS
from shared.search import lists_cache, scheduling
from shared.search.lists import from_bytes, from_columns
from shared.search.loader import libpq_url
from shared.vocabulary import DISPLAY_ORDER as KINDS
from tests.recommendations.helpers import (
    VERSION,
    add_catalogue,
    delete_item,
    expected,
    queued_tasks,
)


def _catalogue(n: int, dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((3, n, dim)).astype(np.float32)
    return {
        f"s{i:03d}": {"full": vecs[0, i], "top": vecs[1, i], "bottom": vecs[2, i]} for i in range(n)
    }


def _item_id(db_session, sku: str) -> int:
    return db_session.scalars(select(Item.id).where(Item.sku == sku)).one()


def _page(client, sku: str, k: int = 5):
    response = client.get(f"/api/v1/items/{sku}/recommendations?k={k}")
    assert response.status_code == 200, response.json
    return response


def _assert_exact(db_session, response, sku: str, k: int = 5) -> None:
    db_session.rollback()
    for kind in KINDS:
        want = [s for s, _ in expected(db_session, sku, kind, k)]
        assert [h["sku"] for h in response.json["results"][kind]] == want, (sku, kind)


def _assert_cache_is_postgresql(db_session, cache_redis) -> str:
    """The live generation holds exactly PostgreSQL's lists, and the newest fold's id."""
    db_session.rollback()
    generation = lists_cache.read_pointer(cache_redis)
    assert generation is not None
    latest = db_session.scalar(select(func.max(ListFold.id)))
    assert lists_cache.read_applied(cache_redis, generation) == latest
    rows = db_session.scalars(select(NeighbourList)).all()
    assert rows
    for row in rows:
        raw = cache_redis.get(
            lists_cache.list_key(generation, row.model_version, row.kind, row.item_id)
        )
        assert raw is not None, (row.kind, row.item_id)
        cached, stored = (
            from_bytes(raw),
            from_columns(row.neighbour_ids, row.sq_distances, row.complete),
        )
        np.testing.assert_array_equal(cached.ids, stored.ids)
        np.testing.assert_array_equal(cached.sq_distances, stored.sq_distances)
        assert cached.complete == stored.complete
    listed = {(r.model_version, r.kind, r.item_id) for r in rows}
    prefix = f"{lists_cache.PREFIX}gen:{generation}:l:"
    in_cache = set()
    for key in cache_redis.scan_iter(match=prefix + "*", count=1000):
        version, kind, item_id = key.decode()[len(prefix) :].rsplit(":", 2)
        in_cache.add((version, kind, int(item_id)))
    assert in_cache == listed  # and nothing PostgreSQL no longer has
    return generation


def _evict(cache_redis, generation: str, item_id: int, kinds=KINDS) -> None:
    keys = [lists_cache.list_key(generation, VERSION, kind, item_id) for kind in kinds]
    assert cache_redis.delete(*keys) == len(keys)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _lock_held_elsewhere(settings) -> Iterator[None]:
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (FOLD_LOCK_KEY,))
        yield
        holder.execute("SELECT pg_advisory_unlock(%s)", (FOLD_LOCK_KEY,))


def test_evicted_lists_are_written_back_and_pages_read_the_cache_again(
    client, db_session, cache_redis, broker_redis, fold
):
    from workers.tasks.lists import repair_cache

    add_catalogue(db_session, _catalogue(40, 8, seed=1))
    fold()
    generation = lists_cache.read_pointer(cache_redis)
    assert _page(client, "s005").headers["X-Lists-Generation"] == generation
    assert broker_redis.scard(scheduling.MISSING_LISTS_KEY) == 0  # a hit notes nothing

    _evict(cache_redis, generation, _item_id(db_session, "s005"))
    _evict(cache_redis, generation, _item_id(db_session, "s010"), kinds=["top"])
    for sku in ("s005", "s010", "s005"):
        response = _page(client, sku)
        _assert_exact(db_session, response, sku)
        assert "X-Lists-Generation" not in response.headers  # read from PostgreSQL
    # Deduplicated: s005 viewed twice is noted once; one repair asked for the whole burst.
    assert broker_redis.scard(scheduling.MISSING_LISTS_KEY) == 4
    assert len(queued_tasks(broker_redis, task_names.REPAIR_LISTS_CACHE)) == 1

    result = repair_cache.run(reason="missing lists")
    assert result["cache"] == "unchanged" and result["noted"] == 4 and result["written"] == 4
    assert result["generation"] == generation
    _assert_cache_is_postgresql(db_session, cache_redis)
    for sku in ("s005", "s010"):
        response = _page(client, sku)
        assert response.headers["X-Lists-Generation"] == generation  # from the cache again
        _assert_exact(db_session, response, sku)
    assert broker_redis.scard(scheduling.MISSING_LISTS_KEY) == 0


def test_a_repair_run_twice_changes_nothing(
    settings, client, db_session, cache_redis, broker_redis, fold
):
    from workers.tasks.lists import repair_cache

    add_catalogue(db_session, _catalogue(25, 8, seed=2))
    fold()
    generation = lists_cache.read_pointer(cache_redis)
    _evict(cache_redis, generation, _item_id(db_session, "s003"))
    _page(client, "s003")
    assert repair_cache.run()["written"] == 3
    # The same misses noted again (a page that raced the first repair): written again, equal.
    item_id = _item_id(db_session, "s003")
    scheduling.note_missing_lists(
        settings, [scheduling.MissingList(VERSION, kind, item_id) for kind in KINDS]
    )
    again = repair_cache.run()
    assert again["written"] == 3 and again["cache"] == "unchanged"
    assert repair_cache.run()["written"] == 0  # nothing noted: nothing to do
    assert _assert_cache_is_postgresql(db_session, cache_redis) == generation
    _assert_exact(db_session, _page(client, "s003"), "s003")


def _fold_with_the_cache_unreachable(settings, fold) -> dict:
    set_settings(settings.replace(redis_cache_url=f"redis://127.0.0.1:{_closed_port()}/0"))
    try:
        return fold()
    finally:
        set_settings(settings)


def test_a_fold_whose_cache_write_failed_is_caught_up_with_no_new_change(
    settings, client, db_session, cache_redis, broker_redis, fold
):
    from workers.tasks.lists import repair_cache

    add_catalogue(db_session, _catalogue(40, 8, seed=4))
    first = fold()
    generation = lists_cache.read_pointer(cache_redis)
    rng = np.random.default_rng(5)
    add_catalogue(
        db_session,
        {
            f"n{i}": {kind: rng.standard_normal(8).astype(np.float32) for kind in KINDS}
            for i in range(5)
        },
    )
    gone = _item_id(db_session, "s007")
    delete_item(db_session, "s007")
    missed = _fold_with_the_cache_unreachable(settings, fold)
    assert missed["cache"] == "unavailable" and missed["fold_id"] > first["fold_id"]
    assert lists_cache.read_applied(cache_redis, generation) == first["fold_id"]  # behind
    # The fold asked for a repair at once, not on the next change.
    assert len(queued_tasks(broker_redis, task_names.REPAIR_LISTS_CACHE)) == 1
    for sku in ("s001", "n2"):
        _assert_exact(db_session, _page(client, sku), sku)  # exact meanwhile
    # An eviction on top of it: the repair catches up first, then writes the list back.
    _evict(cache_redis, generation, _item_id(db_session, "s020"))
    _assert_exact(db_session, _page(client, "s020"), "s020")

    result = repair_cache.run(reason=f"fold {missed['fold_id']}")
    assert result["cache"] == "caught_up" and result["generation"] == generation
    # n2's lists (made by the fold the cache missed) and s020's evicted ones were noted.
    assert result["noted"] == 6 and result["written"] == 6
    assert _assert_cache_is_postgresql(db_session, cache_redis) == generation  # not reloaded
    assert not cache_redis.exists(lists_cache.list_key(generation, VERSION, "full", gone))
    for sku in ("s001", "n2", "s020"):
        response = _page(client, sku)
        assert response.headers["X-Lists-Generation"] == generation
        _assert_exact(db_session, response, sku)
    assert db_session.scalar(select(func.max(ListFold.id))) == missed["fold_id"]  # no new fold


def test_beats_periodic_fold_catches_a_cache_left_behind_up(
    settings, client, db_session, cache_redis, broker_redis, fold
):
    add_catalogue(db_session, _catalogue(30, 8, seed=6))
    fold()
    generation = lists_cache.read_pointer(cache_redis)
    add_catalogue(db_session, {"late": {kind: np.ones(8, np.float32) for kind in KINDS}})
    missed = _fold_with_the_cache_unreachable(settings, fold)
    assert missed["cache"] == "unavailable"
    broker_redis.delete(QUEUE_LISTS)  # the repair's message lost: beat's fold is the backstop
    periodic = fold(reason="periodic")
    assert periodic["fold_id"] is None and periodic["cache"] == "caught_up"
    assert _assert_cache_is_postgresql(db_session, cache_redis) == generation
    response = _page(client, "late")
    assert response.headers["X-Lists-Generation"] == generation
    _assert_exact(db_session, response, "late")


def test_a_repair_finding_the_fold_lock_taken_writes_nothing_and_is_sent_again(
    settings, client, db_session, cache_redis, broker_redis, fold
):
    from workers.tasks.lists import repair_cache

    add_catalogue(db_session, _catalogue(30, 8, seed=7))
    fold()
    generation = lists_cache.read_pointer(cache_redis)
    evicted = _item_id(db_session, "s004")
    _evict(cache_redis, generation, evicted)
    _page(client, "s004")
    broker_redis.delete(QUEUE_LISTS)
    with _lock_held_elsewhere(settings):
        result = repair_cache.run(reason="missing lists")
        assert result["requeued"] is True
        assert len(queued_tasks(broker_redis, task_names.REPAIR_LISTS_CACHE)) == 1
    assert not cache_redis.exists(lists_cache.list_key(generation, VERSION, "full", evicted))
    assert broker_redis.scard(scheduling.MISSING_LISTS_KEY) == 3  # the misses wait
    # A fold gets the lock first and changes s004's lists; the repair then copies the new ones.
    add_catalogue(db_session, {"near": {kind: np.zeros(8, np.float32) for kind in KINDS}})
    assert fold()["cache"] == "applied"
    assert repair_cache.run(reason="missing lists")["written"] == 3
    _assert_cache_is_postgresql(db_session, cache_redis)
    response = _page(client, "s004")
    assert response.headers["X-Lists-Generation"] == generation
    _assert_exact(db_session, response, "s004")


def test_an_evicted_applied_key_reloads_the_generation(
    client, db_session, cache_redis, broker_redis, fold
):
    from workers.tasks.lists import repair_cache

    add_catalogue(db_session, _catalogue(20, 8, seed=8))
    fold()
    generation = lists_cache.read_pointer(cache_redis)
    cache_redis.delete(lists_cache.applied_key(generation))
    response = _page(client, "s002")
    assert "X-Lists-Generation" not in response.headers
    _assert_exact(db_session, response, "s002")
    result = repair_cache.run(reason="missing lists")
    assert result["cache"] == "reloaded" and result["generation"] != generation
    assert _assert_cache_is_postgresql(db_session, cache_redis) == result["generation"]


def test_the_noted_misses_are_bounded(settings, broker_redis):
    many = [
        scheduling.MissingList("v:1", "top", i) for i in range(scheduling.MAX_MISSING_LISTS + 50)
    ]
    assert scheduling.note_missing_lists(settings, many) is True
    assert scheduling.note_missing_lists(settings, many[:10]) is False  # one repair waiting
    assert broker_redis.scard(scheduling.MISSING_LISTS_KEY) == scheduling.MAX_MISSING_LISTS
    assert len(queued_tasks(broker_redis, task_names.REPAIR_LISTS_CACHE)) == 1
    taken = scheduling.take_missing_lists(settings, 5)
    assert len(taken) == 5 and all(m.version == "v:1" and m.kind == "top" for m in taken)
