"""Neighbour lists against brute force, through random interleavings of catalogue changes.

Each scenario inserts, re-photographs (same row, new bytes) and deletes items, folds at random
moments (sometimes from a fresh worker, sometimes with the cache flushed first), and after every
step asks every item's answer as the web tier computes it: lists + the changes they miss, or a
worker's full search where the lists cannot tell. Every answer must equal a float64 brute
force over what PostgreSQL holds at that moment. The catalogues are larger than a list, and
some bursts delete more items than a list's slack, so truncated lists and refills are exercised.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from shared.models import Embedding, Item, NeighbourList
from shared.search import lists_cache, reader
from shared.search.lists import K_MAX, LIST_SLACK, LIST_WIDTH, from_columns
from shared.vocabulary import VectorKind
from tests.recommendations.helpers import (
    add_item,
    brute_force,
    delete_item,
    replace_vector,
    stored_vectors,
)
from workers.search.fold import FoldLockBusy, fold
from workers.search.index import VectorIndex
from workers.search.queries import search_item

KINDS = (VectorKind.FULL, VectorKind.TOP)


def _vector(rng: np.random.Generator, dim: int, tie_heavy: bool) -> np.ndarray:
    if tie_heavy:
        return rng.integers(0, 3, size=dim).astype(np.float32)
    return rng.standard_normal(dim).astype(np.float32)


def _answer(settings, session, cache, sku: str, kind: str, k: int, used: dict) -> list:
    session.rollback()  # a fresh snapshot, as a new request would have
    item = reader.find_item(session, sku)
    generation = lists_cache.read_pointer(cache)
    found = reader.item_neighbours(session, cache, generation, item, [kind], k).neighbours[kind]
    if found is None:
        used["worker"] += 1
        ranked = search_item(settings, item.id, item.version, [kind], k)[kind]
        found = [reader.Neighbour(i, d) for i, d in ranked]
    else:
        used["lists"] += 1
    names = reader.shown(session, item.version, {kind: [n.item_id for n in found]}).labels
    return [(names[n.item_id].sku, n.distance) for n in found]


def _check_items(settings, session, cache, ks, used, sample: int | None = None) -> None:
    rng = np.random.default_rng(len(used) + used["lists"])
    for kind in KINDS:
        rows = stored_vectors(session, kind)
        if not rows:
            continue
        picked = rows if sample is None else [rows[i] for i in rng.choice(len(rows), sample)]
        for item_id, sku, vector in picked:
            for k in ks:
                want = brute_force(rows, vector, k, exclude_item_id=item_id)
                got = _answer(settings, session, cache, sku, kind, k, used)
                assert [s for s, _ in got] == [s for s, _ in want], (sku, kind, k)
                np.testing.assert_allclose(
                    [d for _, d in got], [d for _, d in want], rtol=1e-9, atol=1e-9
                )


def _check_stored_lists(session) -> None:
    """Every stored list is an exact prefix of brute force, long enough, or complete."""
    session.rollback()
    for kind in KINDS:
        rows = stored_vectors(session, kind)
        n = len(rows)
        by_id = {r[0]: r for r in rows}
        lists = session.scalars(select(NeighbourList).where(NeighbourList.kind == kind)).all()
        assert {row.item_id for row in lists} == set(by_id), kind
        if not rows:
            continue
        for row in lists:
            stored = from_columns(row.neighbour_ids, row.sq_distances, row.complete)
            item_id, _, vector = by_id[row.item_id]
            want = brute_force(rows, vector, LIST_WIDTH, exclude_item_id=item_id)
            assert [by_id[i][1] for i in stored.ids] == [s for s, _ in want[: len(stored)]]
            assert len(stored) >= min(K_MAX, n - 1) or stored.complete
            assert stored.complete == (len(stored) == n - 1)


@pytest.mark.parametrize(
    ("seed", "tie_heavy"), [(1, True), (2, False), (3, True), (4, False)], ids=str
)
def test_random_interleavings_stay_exact(
    settings, db_session, cache_redis, broker_redis, seed, tie_heavy
):
    rng = np.random.default_rng(seed)
    dim = 5 if tie_heavy else 12
    used = {"lists": 0, "worker": 0}
    workers = [VectorIndex(), VectorIndex()]  # two worker processes folding in turn
    names = iter(f"p{i:04d}" for i in range(10_000))
    live: list[str] = []

    def insert(count: int) -> None:
        for _ in range(count):
            sku = next(names)
            kinds = {"full": _vector(rng, dim, tie_heavy)}
            if rng.random() < 0.8:
                kinds["top"] = _vector(rng, dim, tie_heavy)
            add_item(db_session, sku, kinds)
            live.append(sku)

    insert(LIST_WIDTH + 40)
    fold(settings, index=workers[0])
    _check_stored_lists(db_session)
    # Every kind of step at least once, in a random order.
    actions = ["insert", "rephoto", "delete", "burst_delete", "mixed"]
    for step, action in enumerate([*rng.permutation(actions), rng.choice(actions)]):
        if action in ("insert", "mixed"):
            insert(int(rng.integers(1, 12)))
        if action in ("rephoto", "mixed"):
            for sku in rng.choice(live, size=5, replace=False):
                replace_vector(db_session, str(sku), "full", _vector(rng, dim, tie_heavy))
        if action in ("delete", "mixed", "burst_delete"):
            count = LIST_SLACK + 10 if action == "burst_delete" else int(rng.integers(1, 6))
            for sku in rng.choice(live, size=count, replace=False):
                delete_item(db_session, str(sku))
                live.remove(str(sku))
        # Before the fold: lists + the changes they miss (or a worker) are already exact.
        _check_items(settings, db_session, cache_redis, (1, 10), used, sample=30)
        if rng.random() < 0.3:
            cache_redis.flushdb()  # the fold must reload the cache from PostgreSQL
        report = fold(settings, index=workers[step % 2])
        assert report.cache in {"applied", "reloaded"}
        _check_stored_lists(db_session)
        _check_items(settings, db_session, cache_redis, (10, K_MAX), used, sample=30)
    _check_items(settings, db_session, cache_redis, (1, 10, K_MAX), used)
    # The lists answer nearly everything; a worker only for the few truly unsure cases.
    assert used["lists"] > 10 * used["worker"]


def test_a_rewritten_vector_moves_the_item_in_every_list(
    settings, db_session, cache_redis, broker_redis
):
    rng = np.random.default_rng(9)
    for i in range(40):
        add_item(db_session, f"s{i:02d}", {"full": rng.standard_normal(8).astype(np.float32)})
    fold(settings, index=VectorIndex())
    target = stored_vectors(db_session, "full")[0][2].copy()
    replace_vector(db_session, "s39", "full", target)  # s39 becomes s00's twin
    used = {"lists": 0, "worker": 0}
    got = _answer(settings, db_session, cache_redis, "s00", "full", 3, used)
    assert got[0] == ("s39", 0.0) and used == {"lists": 1, "worker": 0}
    # s39's own list is stale until the fold: a worker answers it, exactly.
    got = _answer(settings, db_session, cache_redis, "s39", "full", 3, used)
    assert got[0] == ("s00", 0.0) and used["worker"] == 1
    fold(settings, index=VectorIndex())
    _check_stored_lists(db_session)
    got = _answer(settings, db_session, cache_redis, "s39", "full", 3, used)
    assert got[0] == ("s00", 0.0) and used["worker"] == 1


def test_the_change_log_records_inserts_rewrites_and_deletes(settings, db_session):
    from shared.models import ListChange

    item_id = add_item(db_session, "a", {"full": np.zeros(4, np.float32)})

    def log() -> list[tuple[str, int]]:
        db_session.rollback()
        rows = db_session.scalars(select(ListChange).order_by(ListChange.id)).all()
        return [(r.kind, r.item_id) for r in rows]

    assert log() == [("full", item_id)]
    row = db_session.scalars(select(Embedding).where(Embedding.item_id == item_id)).one()
    row.score = 0.5  # same vector: not a change
    db_session.commit()
    assert len(log()) == 1
    replace_vector(db_session, "a", "full", np.ones(4, np.float32))
    assert len(log()) == 2
    db_session.delete(db_session.scalars(select(Item).where(Item.sku == "a")).one())
    db_session.commit()
    assert log() == [("full", item_id)] * 3


def test_concurrent_folds_while_batches_commit_lose_nothing(
    settings, db_session, cache_redis, broker_redis
):
    """Two workers fold at the same time as batches commit: every change lands in the lists."""
    import threading

    from shared.db import session_factory

    rng = np.random.default_rng(11)
    for i in range(LIST_WIDTH + 10):
        add_item(db_session, f"s{i:04d}", {"full": rng.standard_normal(6).astype(np.float32)})
    fold(settings, index=VectorIndex())
    stop = threading.Event()
    errors: list[BaseException] = []

    def committer() -> None:
        session = session_factory(settings)()
        try:
            for batch in range(8):
                for j in range(5):
                    vector = np.random.default_rng(batch * 10 + j).standard_normal(6)
                    add_item(session, f"b{batch}-{j}", {"full": vector.astype(np.float32)})
        except BaseException as exc:  # noqa: BLE001  reported below
            errors.append(exc)
        finally:
            session.close()
            stop.set()

    def folder() -> None:
        index = VectorIndex()
        try:
            while not stop.is_set():
                try:
                    fold(settings, index=index)
                except FoldLockBusy:
                    continue  # the other folds now: what a worker's task sends again later
        except BaseException as exc:  # noqa: BLE001  reported below
            errors.append(exc)

    threads = [threading.Thread(target=committer)] + [
        threading.Thread(target=folder) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    fold(settings, index=VectorIndex())
    _check_stored_lists(db_session)
    used = {"lists": 0, "worker": 0}
    _check_items(settings, db_session, cache_redis, (10,), used, sample=40)
    assert used["worker"] == 0
