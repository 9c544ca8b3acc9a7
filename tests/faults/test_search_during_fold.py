"""An item search answers while a fold is held half-way: folds run in the lists worker (the
Procfile's ``lists``), searches in the query worker (``query``), so a search never queues
behind a fold, nor waits on the fold's locks."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest
from sqlalchemy import select

from shared import task_names
from shared.models import Item
from shared.queueing import QUEUE_LISTS, QUEUE_QUERY, make_celery
from shared.search.loader import libpq_url
from shared.search.scheduling import request_fold
from tests.recommendations.helpers import VERSION, add_catalogue, add_item, expected
from tests.recommendations.test_lists_exact import _check_stored_lists
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess
from workers.search.fold import fold
from workers.search.index import VectorIndex

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_FOLD_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE list_changes SET fold_id%%'"
)


def _pending(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM list_changes WHERE fold_id IS NULL").fetchone()[0]


def test_an_item_search_answers_while_a_fold_is_held(
    settings, db_session, cache_redis, broker_redis, tmp_path
):
    # The lock timeout outlasts the test: the fold waits for the held rows rather than fail.
    settings = settings.replace(
        model_dir=None,
        embedder_weights="random",
        embedder_input_size=64,
        fold_debounce_s=0.0,
        db_lock_timeout_s=600.0,
    )
    rng = np.random.default_rng(12)
    add_catalogue(
        db_session, {f"f{i:02d}": {"full": rng.standard_normal(6, np.float32)} for i in range(30)}
    )
    fold(settings, index=VectorIndex())
    add_item(db_session, "fresh", {"full": rng.standard_normal(6, np.float32)})
    fresh = db_session.scalars(select(Item.id).where(Item.sku == "fresh")).one()
    lists = WorkerProcess(settings, tmp_path / "lists.log", queues=(QUEUE_LISTS,))
    query = WorkerProcess(settings, tmp_path / "query.log", queues=(QUEUE_QUERY,))
    lists.start(wait_s=300)
    query.start(wait_s=300)
    client = make_celery(settings)
    url = libpq_url(settings.database_url)
    try:
        # The folds yield the CPU to the searches (LISTS_WORKER_NICE); the searches do not.
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        wait_until(
            lambda: os.getpriority(os.PRIO_PROCESS, lists.proc.pid) == min(19, ours + 10),
            60,
            message=lambda: f"the lists worker's priority:\n{lists.tail()}",
        )
        assert os.getpriority(os.PRIO_PROCESS, query.proc.pid) == ours
        with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watch:
            # The fold gets as far as marking its changes, then waits on these rows.
            holder.execute("SELECT 1 FROM list_changes WHERE fold_id IS NULL FOR UPDATE")
            request_fold(settings, reason="held fold")
            wait_until(
                lambda: watch.execute(_FOLD_WAITING).fetchone()[0] == 1,
                120,
                message=lambda: f"the fold waiting on the held rows:\n{lists.tail()}",
            )
            result = client.send_task(
                task_names.SEARCH_ITEM,
                kwargs={"item_id": fresh, "version": VERSION, "kinds": ["full"], "k": 5},
                queue=QUEUE_QUERY,
            )
            answer = result.get(timeout=120)
            # Answered while the fold still held the fold lock and its snapshot.
            assert watch.execute(_FOLD_WAITING).fetchone()[0] == 1
            assert _pending(watch) == 1
            holder.rollback()
            wait_until(lambda: _pending(watch) == 0, 120, message=lambda: lists.tail())
        by_id = dict(db_session.execute(select(Item.id, Item.sku)).tuples().all())
        got = [(by_id[int(i)], d) for i, d in answer["results"]["full"]]
        want = expected(db_session, "fresh", "full", 5)
        assert [sku for sku, _ in got] == [sku for sku, _ in want]
        assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=1e-5)
        _check_stored_lists(db_session)
    finally:
        client.close()
        query.stop()
        lists.stop()
