"""Writing the neighbour lists into the Redis cache (layout: shared.search.lists_cache).

Called with the fold lock held (workers.search.fold), so PostgreSQL and the cache move in the
same order. A fold's lists go into the live generation in one MULTI when that generation
includes the previous fold; otherwise (cold, flushed, or a fold whose cache write failed) a new
generation is copied from PostgreSQL: never a recomputation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from shared.redis_clients import redis_client
from shared.search import lists_cache
from shared.search.lists import from_columns
from shared.search.loader import PgConnection, one_row

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

# Above this many lists (~400 MB) a fold writes a new generation instead of one huge MULTI (a
# first computation of a whole catalogue would otherwise block Redis while it applies).
MAX_MULTI_UPDATES = 200_000
_PIPELINE_ROWS = 1000
_EVERYTHING = 2**62


def _new_generation_name() -> str:
    return f"{int(time.time() * 1000):013d}-{np.random.default_rng().integers(1 << 32):08x}"


def reload(conn: PgConnection, settings: Settings, *, reason: str) -> dict[str, Any]:
    """Copy every list from PostgreSQL into a new generation and switch the pointer to it."""
    client = redis_client(settings.redis_cache_url)
    started = time.perf_counter()
    name = _new_generation_name()
    written = 0
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        applied = int(one_row(conn.execute("SELECT coalesce(max(id), 0) FROM list_folds"))[0])
        pipe = client.pipeline(transaction=False)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY (SELECT model_version, kind, item_id, neighbour_ids, sq_distances, complete"
                " FROM neighbour_lists) TO STDOUT (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "text", "int8", "bytea", "bytea", "bool"])
            for version, kind, item_id, ids, d2, complete in copy.rows():
                value = from_columns(ids, d2, complete).to_bytes()
                pipe.set(lists_cache.list_key(name, version, kind, item_id), value)
                written += 1
                if written % _PIPELINE_ROWS == 0:
                    pipe.execute()
        pipe.execute()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        _drop(client, name)
        raise
    meta = {
        "generation": name,
        "created_at": time.time(),
        "applied": applied,
        "lists": written,
        "reason": reason,
    }
    lists_cache.write_meta(client, name, meta)
    client.set(lists_cache.applied_key(name), str(applied))
    previous = lists_cache.publish(client, name)
    seconds = time.perf_counter() - started
    log.info(
        "lists cache reloaded",
        extra={**meta, "previous": previous, "seconds": round(seconds, 3)},
    )
    return {**meta, "previous": previous, "seconds": round(seconds, 3)}


def _drop(client: redis.Redis, generation: str) -> None:
    try:
        keys = list(client.scan_iter(match=lists_cache.generation_pattern(generation), count=5000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    except redis.RedisError:
        log.warning("could not remove a half-written generation", extra={"generation": generation})


def after_fold(
    conn: PgConnection,
    settings: Settings,
    fold_id: int | None,
    prev_fold: int,
    updates: Sequence[lists_cache.ListUpdate],
) -> str:
    """Bring the cache to ``fold_id`` (or heal it when nothing was folded); says what it did."""
    client = redis_client(settings.redis_cache_url)
    try:
        pointer = lists_cache.read_pointer(client)
        applied = lists_cache.read_applied(client, pointer) if pointer else None
        if fold_id is None:
            if applied is None:
                reload(conn, settings, reason="cache cold")
                return "reloaded"
            return "unchanged"
        if pointer is not None and applied == prev_fold and len(updates) <= MAX_MULTI_UPDATES:
            lists_cache.apply_fold(client, pointer, fold_id, updates)
            return "applied"
        reload(conn, settings, reason=f"fold {fold_id}: cache at {applied}, wanted {prev_fold}")
        return "reloaded"
    except redis.RedisError as exc:
        # PostgreSQL holds the lists; readers of a stale generation still add every change
        # after its fold (those rows are not purged), and the next fold reloads the cache.
        log.warning("lists cache not updated", extra={"fold_id": fold_id, "error": str(exc)})
        return "unavailable"


def live_applied(settings: Settings) -> int | None:
    """The fold the live generation includes; None when the cache cannot be read."""
    client = redis_client(settings.redis_cache_url)
    try:
        pointer = lists_cache.read_pointer(client)
        if pointer is None:
            return _EVERYTHING  # nobody reads a cache that is not there
        applied = lists_cache.read_applied(client, pointer)
    except redis.RedisError:
        return None
    return _EVERYTHING if applied is None else applied
