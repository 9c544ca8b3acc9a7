"""Which workers of each version are alive: a heartbeat per worker in the broker Redis.

One sorted set per version, member = the worker's node name, score = its last beat (Unix
seconds), and one per version and role (the plain queue it consumes: ``ingest``, ``query``,
``lists``), because work is routed by role: an item search sent to ``query.<v>`` because a
lists worker of ``v`` is alive would wait for a query worker that does not exist. A worker beats
every ``BEAT_S`` from a thread of its own (a solo-pool worker busy with a batch still beats) and
leaves the sets when it shuts down; one that vanished drops out of the counts ``LIVE_S`` after
its last beat.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.redis_clients import redis_client
from shared.versions.routing import VERSIONED_QUEUES

if TYPE_CHECKING:
    from shared.config import Settings

WORKERS_KEY = "visrec:versions:workers:"
BEAT_S = 5.0
LIVE_S = 20.0


def _key(version: str, role: str | None) -> str:
    return WORKERS_KEY + version if role is None else f"{WORKERS_KEY}{role}:{version}"


def beat(settings: Settings, version: str, node: str, roles: Iterable[str] = ()) -> None:
    """``roles``: the plain queues (of shared.versions.routing.VERSIONED_QUEUES) it consumes."""
    client = redis_client(settings.redis_broker_url)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for key in (_key(version, None), *(_key(version, role) for role in roles)):
        pipe.zadd(key, {node: now})
        pipe.zremrangebyscore(key, "-inf", now - LIVE_S)
    pipe.execute()


def leave(settings: Settings, version: str, node: str) -> None:
    pipe = redis_client(settings.redis_broker_url).pipeline(transaction=False)
    for role in (None, *VERSIONED_QUEUES):
        pipe.zrem(_key(version, role), node)
    pipe.execute()


def live_workers(
    settings: Settings, versions: Iterable[str], role: str | None = None
) -> dict[str, int]:
    """Live workers per version (0 where none beat within ``LIVE_S``); of one role when named."""
    versions = list(versions)
    if not versions:
        return {}
    client = redis_client(settings.redis_broker_url)
    since = time.time() - LIVE_S
    pipe = client.pipeline(transaction=False)
    for version in versions:
        pipe.zcount(_key(version, role), since, "+inf")
    return {v: int(n) for v, n in zip(versions, pipe.execute(), strict=True)}


def forget(settings: Settings, version: str) -> None:
    keys = [_key(version, role) for role in (None, *VERSIONED_QUEUES)]
    redis_client(settings.redis_broker_url).delete(*keys)
