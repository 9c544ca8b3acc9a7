"""Rebuild the matrix cache from PostgreSQL: one new generation, then an atomic switch.

Rebuilds are serialised by a lock on the broker (the cache may be flushed at any time, the
broker keeps its keys), so two workers never write generations at once. Each run bumps a
counter on the broker so operators (and tests) can see how many rebuilds really happened.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
import redis
from tqdm import tqdm

from shared.config import Settings
from shared.search import matrix_cache, scheduling
from shared.search.loader import begin_snapshot, libpq_url, stream_vectors

log = logging.getLogger(__name__)

LOCK_KEY = "visrec:rebuild:lock"
COUNT_KEY = "visrec:rebuild:count"
LOCK_TIMEOUT_S = 3600


@dataclass(frozen=True)
class RebuildResult:
    generation: str
    previous: str | None
    current_version: str | None
    rows: dict[str, dict[str, int]]
    seconds: float

    def as_dict(self) -> dict:
        return {
            "generation": self.generation,
            "previous": self.previous,
            "current_version": self.current_version,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


def rebuild_count(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_broker_url)
    try:
        return int(client.get(COUNT_KEY) or 0)
    finally:
        client.close()


def rebuild_cache(settings: Settings, *, reason: str) -> RebuildResult:
    broker = redis.Redis.from_url(settings.redis_broker_url)
    cache = redis.Redis.from_url(settings.redis_cache_url)
    try:
        with broker.lock(LOCK_KEY, timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_TIMEOUT_S):
            broker.incr(COUNT_KEY)
            return _rebuild_locked(settings, cache, broker, reason)
    finally:
        broker.close()
        cache.close()


def _rebuild_locked(
    settings: Settings, cache: redis.Redis, broker: redis.Redis, reason: str
) -> RebuildResult:
    started = time.perf_counter()
    writer = matrix_cache.GenerationWriter(cache, settings.cache_chunk_bytes)
    rows: dict[str, dict[str, int]] = {}
    try:
        with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
            snapshot = begin_snapshot(conn)
            for version in snapshot.versions:
                for kind in snapshot.kinds_by_version[version]:
                    stream = tqdm(
                        stream_vectors(conn, version, kind),
                        desc=f"cache {version[:12]}/{kind}",
                        unit="row",
                        disable=None,
                    )
                    rows.setdefault(version, {})[kind] = writer.write_kind(version, kind, stream)
            conn.execute("COMMIT")
        writer.finish(
            current_version=snapshot.current_version,
            max_embedding_id=snapshot.max_embedding_id,
            reason=reason,
        )
        previous = matrix_cache.publish(cache, writer.name)
    except BaseException:
        writer.abandon()
        raise
    # Only now is the cache whole again: a later flush must be able to ask for a rebuild.
    scheduling.clear_empty_cache_flag(settings, client=broker)
    seconds = time.perf_counter() - started
    log.info(
        "cache rebuilt",
        extra={
            "generation": writer.name,
            "previous": previous,
            "reason": reason,
            "current_version": snapshot.current_version,
            "rows": rows,
            "seconds": round(seconds, 3),
        },
    )
    return RebuildResult(writer.name, previous, snapshot.current_version, rows, seconds)
