"""Which workers of each version are alive: a heartbeat per worker in the broker Redis.

One sorted set per version, member = the worker's node name, score = its last beat (Unix
seconds). A worker beats every ``BEAT_S`` from a thread of its own (a solo-pool worker busy
with a batch still beats) and leaves the set when it shuts down; one that vanished drops out
of the count ``LIVE_S`` after its last beat.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.redis_clients import redis_client

if TYPE_CHECKING:
    from shared.config import Settings

WORKERS_KEY = "visrec:versions:workers:"
BEAT_S = 5.0
LIVE_S = 20.0


def beat(settings: Settings, version: str, node: str) -> None:
    client = redis_client(settings.redis_broker_url)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS_KEY + version, {node: now})
    pipe.zremrangebyscore(WORKERS_KEY + version, "-inf", now - LIVE_S)
    pipe.execute()


def leave(settings: Settings, version: str, node: str) -> None:
    redis_client(settings.redis_broker_url).zrem(WORKERS_KEY + version, node)


def live_workers(settings: Settings, versions: Iterable[str]) -> dict[str, int]:
    """Live workers per version (0 where none beat within ``LIVE_S``)."""
    versions = list(versions)
    if not versions:
        return {}
    client = redis_client(settings.redis_broker_url)
    since = time.time() - LIVE_S
    pipe = client.pipeline(transaction=False)
    for version in versions:
        pipe.zcount(WORKERS_KEY + version, since, "+inf")
    return {v: int(n) for v, n in zip(versions, pipe.execute(), strict=True)}


def forget(settings: Settings, version: str) -> None:
    redis_client(settings.redis_broker_url).delete(WORKERS_KEY + version)
