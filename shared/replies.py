"""Answers of the searches a web thread waits for: one Redis list per request, on the broker.

The worker that ran a ``query`` task pushes its outcome onto ``visrec:reply:<task id>``; the
web thread that sent it blocks on that list (BLPOP) until its deadline. A list, not pub/sub:
an answer pushed before the web starts waiting is still there, and a blocking pop holds one
pooled connection of the calling thread only, so the threads of a web process never share a
consumer (as Celery's result subscriptions would). Replies expire if nobody takes them (the web
gave up), so an answer without a reader does not stay.

The broker's Redis, not the cache's: the cache may evict keys at any time.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

_PREFIX = "visrec:reply:"
# Longer than any web thread waits (QUERY_TIMEOUT_S), short enough not to pile up.
REPLY_TTL_S = 300
# Each blocking pop waits at most this long: below the pooled clients' socket timeout
# (shared.redis_clients), so a wait never reads as a dead Redis.
_POP_S = 1.0
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"


def reply_key(task_id: str) -> str:
    return f"{_PREFIX}{task_id}"


def push_reply(client: redis.Redis, task_id: str, status: str, result: Any = None) -> None:
    """Hand a task's outcome (``SUCCESS`` with its JSON-safe result, or ``FAILURE``) to whoever
    waits for it."""
    key = reply_key(task_id)
    pipe = client.pipeline(transaction=False)
    pipe.rpush(key, json.dumps({"status": status, "result": result}))
    pipe.expire(key, REPLY_TTL_S)
    pipe.execute()


def wait_reply(client: redis.Redis, task_id: str, deadline: float) -> dict[str, Any] | None:
    """The outcome pushed for ``task_id`` (``{"status", "result"}``), or None when none came by
    ``deadline`` (time.monotonic())."""
    key = reply_key(task_id)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # Redis reads a blocking timeout of 0 as "for ever": never send one.
        popped = client.blpop([key], timeout=max(0.01, min(_POP_S, left)))
        if popped is not None:
            outcome: dict[str, Any] = json.loads(popped[1])
            return outcome
