"""Debounced cache rebuilds: a burst of writes schedules one rebuild, not one per write."""

from __future__ import annotations

import redis

from shared import task_names
from shared.config import Settings
from shared.queueing import QUEUE_DEFAULT, task_sender

PENDING_KEY = "visrec:rebuild:pending"
# Set by the first web process that finds the cache empty; cleared when a rebuild has published.
EMPTY_CACHE_KEY = "visrec:rebuild:cache-empty"
EMPTY_CACHE_FLAG_TTL_S = 300


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
    task_sender(settings).send_task(
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


def request_rebuild_for_empty_cache(settings: Settings) -> bool:
    """Single flight for a lost cache: however many requests notice, one rebuild is asked for.

    ``request_rebuild``'s pending flag is cleared when a rebuild *starts* (so writes during a
    rebuild schedule the next one); requests that keep finding the cache empty while that rebuild
    runs must not schedule more. This flag lasts until a rebuild has *published* (or expires, so
    a lost task cannot block recovery forever). Returns True when this call asked.
    """
    client = redis.Redis.from_url(settings.redis_broker_url)
    try:
        if not client.set(EMPTY_CACHE_KEY, "1", nx=True, ex=EMPTY_CACHE_FLAG_TTL_S):
            return False
    finally:
        client.close()
    request_rebuild(settings, reason="cache_empty")
    return True


def clear_empty_cache_flag(settings: Settings, client: redis.Redis | None = None) -> None:
    own = client is None
    client = client or redis.Redis.from_url(settings.redis_broker_url)
    try:
        client.delete(EMPTY_CACHE_KEY)
    finally:
        if own:
            client.close()
