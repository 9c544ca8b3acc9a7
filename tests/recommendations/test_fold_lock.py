"""The fold lock is never waited for: a fold or cache reload that finds it taken is sent again
later, and a holder that stopped moving loses its lock to the server's timeouts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
import pytest
from sqlalchemy import func, select

from shared import task_names
from shared.locks import FOLD_LOCK_KEY
from shared.models import Item, ListChange, ListFold, NeighbourList
from shared.search.loader import libpq_url
from shared.search.scheduling import RELOAD_PENDING_KEY
from tests.recommendations.helpers import (
    add_catalogue,
    add_item,
    delete_item,
    expected,
    queued_tasks,
    replace_vector,
)
from tests.recommendations.test_lists_exact import _check_stored_lists
from tests.support.waiting import wait_until
from workers.search.fold import FoldLockBusy, connect, fold
from workers.search.index import VectorIndex


def _catalogue(db_session, n: int = 30) -> None:
    rng = np.random.default_rng(3)
    add_catalogue(
        db_session, {f"s{i:02d}": {"full": rng.standard_normal(6, np.float32)} for i in range(n)}
    )


@contextmanager
def _lock_held_elsewhere(settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (FOLD_LOCK_KEY,))
        yield holder
        holder.execute("SELECT pg_advisory_unlock(%s)", (FOLD_LOCK_KEY,))


def _in_thread(call) -> dict:
    """``call()`` on another thread, which must finish: a blocked lock wait would not."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(result=call()), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the task waited for the fold lock"
    return out["result"]


def _lists(db_session) -> int:
    db_session.rollback()
    return db_session.scalar(select(func.count()).select_from(NeighbourList))


def test_a_fold_finding_the_lock_taken_is_sent_again_and_then_folds(
    settings, db_session, cache_redis, broker_redis, fold
):
    _catalogue(db_session)
    with _lock_held_elsewhere(settings):
        result = _in_thread(fold)
        assert result["requeued"] is True
        again = queued_tasks(broker_redis, task_names.FOLD_LISTS)
        assert len(again) == 1 and again[0]["headers"]["eta"]  # sent with a countdown
        assert _lists(db_session) == 0
    # The requeued delivery, once the holder is done: every list, exact.
    report = fold()
    assert report["fold_id"] and report["changes"] == 30
    assert _lists(db_session) == 30
    db_session.rollback()
    stored = db_session.scalars(
        select(NeighbourList).where(NeighbourList.item_id == _item_id(db_session, "s07"))
    ).one()
    skus = _skus(db_session, np.frombuffer(stored.neighbour_ids, "<i8")[:5])
    assert skus == [sku for sku, _ in expected(db_session, "s07", "full", 5)]


def _item_id(db_session, sku: str) -> int:
    return db_session.scalars(select(Item.id).where(Item.sku == sku)).one()


def _skus(db_session, item_ids: np.ndarray) -> list[str]:
    by_id = dict(db_session.execute(select(Item.id, Item.sku)).tuples().all())
    return [by_id[int(i)] for i in item_ids]


def test_a_cache_reload_finding_the_lock_taken_is_sent_again(
    settings, db_session, cache_redis, broker_redis
):
    from workers.tasks.lists import reload_cache

    _catalogue(db_session)
    fold(settings, index=VectorIndex())
    broker_redis.set(RELOAD_PENDING_KEY, "cold")
    with _lock_held_elsewhere(settings):
        result = _in_thread(lambda: reload_cache.run(reason="cold"))
        assert result["requeued"] is True
        assert len(queued_tasks(broker_redis, task_names.RELOAD_LISTS_CACHE)) == 1
        # Still pending: readers that notice the cold cache meanwhile ask for no other reload.
        assert broker_redis.get(RELOAD_PENDING_KEY) is not None
    assert reload_cache.run(reason="cold")["lists"] == 30
    assert broker_redis.get(RELOAD_PENDING_KEY) is None


def test_worker_connections_carry_keepalives_and_timeouts(settings):
    settings = settings.replace(
        db_keepalives_idle_s=7,
        db_lock_timeout_s=3.0,
        db_statement_timeout_s=40.0,
        db_idle_in_transaction_timeout_s=50.0,
    )
    with connect(settings) as conn:
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in (
                "tcp_keepalives_idle",
                "lock_timeout",
                "statement_timeout",
                "idle_in_transaction_session_timeout",
            )
        }
    assert shown == {
        "tcp_keepalives_idle": "7",
        "lock_timeout": "3s",
        "statement_timeout": "40s",
        "idle_in_transaction_session_timeout": "50s",
    }


def test_a_holder_frozen_inside_its_transaction_loses_the_lock(
    settings, db_session, cache_redis, broker_redis
):
    _catalogue(db_session)
    frozen = settings.replace(db_idle_in_transaction_timeout_s=1.0)
    holder = connect(frozen)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (FOLD_LOCK_KEY,))
        holder.execute("BEGIN")  # ... and then nothing more, as a stopped process would
        try:
            fold(settings, index=VectorIndex())
            raise AssertionError("the fold ran while another held the lock")
        except FoldLockBusy:
            pass

        def folded() -> bool:
            try:
                return fold(settings, index=VectorIndex()).fold_id is not None
            except FoldLockBusy:
                return False

        wait_until(folded, timeout=30, message="the frozen holder's lock was never freed")
        assert _lists(db_session) == 30
    finally:
        holder.close()


def test_a_fold_that_fails_part_way_leaves_nothing_behind_and_the_next_one_folds_it_all(
    settings, db_session, cache_redis, broker_redis
):
    rng = np.random.default_rng(11)
    _catalogue(db_session)
    index = VectorIndex()  # one worker process: its matrices and lists outlive the failure
    fold(settings, index=index)
    for i in range(30, 36):
        add_item(db_session, f"s{i:02d}", {"full": rng.standard_normal(6, np.float32)})
    replace_vector(db_session, "s04", "full", rng.standard_normal(6, np.float32))
    delete_item(db_session, "s09")
    folds_before = _count(db_session, ListFold)
    # Reads go on, writes to the lists wait: the fold has changed its lists in memory when its
    # upsert times out on the lock.
    with psycopg.connect(libpq_url(settings.database_url)) as writer_blocker:
        writer_blocker.execute("LOCK TABLE neighbour_lists IN EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            fold(settings.replace(db_lock_timeout_s=0.5), index=index)
        writer_blocker.rollback()
    # Rolled back: no fold recorded, every change still pending, the old lists still stored.
    assert _count(db_session, ListFold) == folds_before
    db_session.rollback()
    pending = select(func.count(func.distinct(ListChange.item_id))).where(
        ListChange.fold_id.is_(None)
    )
    assert db_session.scalar(pending) == 8
    assert _lists(db_session) == 30
    report = fold(settings, index=index)
    assert report.changes == 8 and report.lists_removed == 1
    _check_stored_lists(db_session)


def _count(db_session, model) -> int:
    db_session.rollback()
    return db_session.scalar(select(func.count()).select_from(model))
