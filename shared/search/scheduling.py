"""Debounced cache rebuilds: a burst of writes schedules one rebuild, not one per write."""

from __future__ import annotations

import redis

from shared import task_names
from shared.config import Settings
from shared.queueing import QUEUE_DEFAULT, make_celery

PENDING_KEY = "visrec:rebuild:pending"


def request_rebuild(settings: Settings, *, reason: str) -> bool:
    """Schedule a cache rebuild ``rebuild_debounce_s`` from now unless one is already pending.

    Returns True when this call scheduled it. The rebuild task clears the pending flag when it
    starts, so writes that land during a rebuild schedule the next one. The flag lives on the
    broker (not the cache, which may be flushed at any time) and expires on its own, so a lost
    task cannot block rebuilds forever.
    """
    client = redis.Redis.from_url(settings.redis_broker_url)
    try:
        delay_ms = max(1, int(settings.rebuild_debounce_s * 1000))
        if not client.set(PENDING_KEY, reason, nx=True, px=delay_ms + 60_000):
            return False
    finally:
        client.close()
    make_celery(settings).send_task(
        task_names.REBUILD_CACHE,
        kwargs={"reason": reason},
        queue=QUEUE_DEFAULT,
        countdown=settings.rebuild_debounce_s,
    )
    return True


def clear_pending(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_broker_url)
    try:
        client.delete(PENDING_KEY)
    finally:
        client.close()
