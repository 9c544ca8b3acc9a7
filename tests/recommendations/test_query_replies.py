"""What the lists cannot answer goes to a query worker: its selection uses the attributes
index, and the web thread takes the worker's answer from the request's reply list (or says 503
with the codes it always used)."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import psycopg

from shared import replies
from shared.search import filters
from shared.search.loader import libpq_url
from tests.recommendations.helpers import add_item
from tests.support.waiting import wait_until
from workers.search.queries import passing_sql

if TYPE_CHECKING:
    import redis


def test_a_reply_pushed_before_the_wait_is_taken_and_none_means_no_answer(broker_redis) -> None:
    replies.push_reply(broker_redis, "t-1", replies.SUCCESS, {"results": {"full": [[7, 0.5]]}})
    assert 0 < broker_redis.ttl(replies.reply_key("t-1")) <= replies.REPLY_TTL_S
    got = replies.wait_reply(broker_redis, "t-1", time.monotonic() + 5)
    assert got == {"status": "SUCCESS", "result": {"results": {"full": [[7, 0.5]]}}}
    assert not broker_redis.exists(replies.reply_key("t-1"))
    assert replies.wait_reply(broker_redis, "t-2", time.monotonic() + 0.2) is None


def test_the_selection_of_a_selective_filter_uses_the_attributes_index(
    settings, db_session
) -> None:
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO items (sku, status, attributes) SELECT 'x' || i, 'ready',"
            " jsonb_build_object('rare', i % 100 = 37, 'size', (i % 7)::text, 'n', i % 10)"
            " FROM generate_series(1, 5000) AS i"
        )
        conn.execute("ANALYZE items")
        spec = filters.parse(
            [("attr.rare", "true"), ("attr.size", '"3"'), ("attr.size", '"4"'), ("attr.n.min", "5")]
        )
        sql, params = passing_sql(spec)
        plan = json.dumps(conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()[0])
        assert "ix_items_attributes" in plan
        got = sorted(r[0] for r in conn.execute(sql, params).fetchall())
        rows = conn.execute("SELECT id, attributes FROM items").fetchall()
    assert got == sorted(i for i, a in rows if filters.matches(spec, a))
    assert got  # the filter is selective, not empty


def _play_worker(client: redis.Redis, status: str, result: object) -> threading.Thread:
    """Take the next search off the plain query queue and answer it as a worker does."""

    def answer() -> None:
        popped = client.brpop(["query"], timeout=30)
        if popped is None:
            return
        message = json.loads(popped[1])
        task_id = message["headers"]["id"]
        kwargs = json.loads(base64.b64decode(message["body"]))[1]
        answer = result(kwargs) if callable(result) else result
        replies.push_reply(client, task_id, status, answer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_the_page_takes_the_workers_answer_from_its_reply_list(
    app, client, db_session, broker_redis
) -> None:
    ids = {
        sku: add_item(db_session, sku, {"full": np.full(4, i, np.float32)})
        for i, sku in enumerate(["a", "b", "c"])
    }
    # No fold yet: the item has no list, so a worker must answer.
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(query_timeout_s=20.0)
    thread = _play_worker(
        broker_redis,
        replies.SUCCESS,
        lambda kwargs: {"results": {"full": [[ids["c"], 2.0]]}, "asked": kwargs},
    )
    response = client.get("/api/v1/items/a/recommendations?kinds=full")
    thread.join(timeout=30)
    assert response.status_code == 200, response.json
    assert [h["sku"] for h in response.json["results"]["full"]] == ["c"]

    thread = _play_worker(broker_redis, replies.FAILURE, None)
    failed = client.get("/api/v1/items/a/recommendations?kinds=full")
    thread.join(timeout=30)
    assert failed.status_code == 503 and failed.json["code"] == "query_failed"
    assert int(failed.headers["Retry-After"]) > 0


def test_no_reply_by_the_deadline_is_503_query_timeout(app, client, db_session) -> None:
    add_item(db_session, "a", {"full": np.zeros(4, np.float32)})
    add_item(db_session, "b", {"full": np.ones(4, np.float32)})
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(query_timeout_s=0.5)
    response = client.get("/api/v1/items/a/recommendations?kinds=full&attr.x=1")
    assert response.status_code == 503
    assert response.json["code"] == "query_timeout"
    assert int(response.headers["Retry-After"]) > 0


def test_a_search_after_postgresql_dropped_the_kept_connection_still_answers(
    settings, db_session, fold
) -> None:
    """The worker keeps one connection for its searches; a server that closed it (a restart)
    costs the next search nothing: its BEGIN reconnects."""
    from tests.recommendations.helpers import VERSION, brute_force, stored_vectors
    from workers.search import snapshot
    from workers.search.queries import search_vectors

    rng = np.random.default_rng(4)
    for i in range(12):
        add_item(db_session, f"r{i:02d}", {"full": rng.standard_normal(4).astype(np.float32)})
    query = rng.standard_normal(4).astype(np.float32)
    want = [sku for sku, _ in brute_force(stored_vectors(db_session, "full"), query, 3)]
    ids = {r[0]: r[1] for r in stored_vectors(db_session, "full")}

    def answer() -> list[str]:
        found = search_vectors(settings, VERSION, {"full": query}, 3)
        return [ids[item_id] for item_id, _ in found["full"]]

    assert answer() == want
    kept = [c.info.backend_pid for c in snapshot._kept.values() if not c.closed]
    assert kept
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as admin:
        for pid in kept:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        # Gone for certain before the next search, so that search meets a dead connection.
        wait_until(
            lambda: (
                not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (kept,)
                ).fetchone()
            ),
            timeout=60,
        )
    assert answer() == want
