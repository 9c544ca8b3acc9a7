"""Writing the neighbour lists into the Redis cache (layout: shared.search.lists_cache).

Called with the fold lock held (workers.search.fold, workers.search.cache_repair), so
PostgreSQL and the cache move in the same order. A fold's lists go into the live generation in
one MULTI when that generation includes the previous fold. A generation left behind (a fold
whose cache write failed) catches up: the lists the folds it missed wrote or removed, copied
from PostgreSQL in one MULTI with the newest fold's id. A cold or flushed cache, or one too far
behind, gets a new generation copied from PostgreSQL: never a recomputation.
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


# Every list a fold after ``applied`` (up to ``latest``) wrote or removed: the lists it wrote
# carry its id, and a list goes away only for an item in that fold's changes.
_SINCE_SQL = """
    WITH touched AS (
        SELECT model_version, kind, item_id FROM neighbour_lists WHERE fold_id > %(applied)s
        UNION
        SELECT model_version, kind, item_id FROM list_changes
         WHERE fold_id > %(applied)s AND fold_id <= %(latest)s
    )
    SELECT {columns}
      FROM touched t LEFT JOIN neighbour_lists n USING (model_version, kind, item_id)
"""
_COUNT_SINCE_SQL = _SINCE_SQL.format(columns="count(*)")
_ROWS_SINCE_SQL = _SINCE_SQL.format(
    columns="t.model_version, t.kind, t.item_id, n.neighbour_ids, n.sq_distances, n.complete"
)


def _lists_since(
    conn: PgConnection, applied: int, latest: int
) -> list[lists_cache.ListUpdate] | None:
    """What folds ``applied`` + 1 ... ``latest`` changed, as PostgreSQL holds it now; None when
    the change log no longer reaches back that far, or when they are too many for one MULTI."""
    params = {"applied": applied, "latest": latest}
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        purged = int(one_row(conn.execute("SELECT purged_through FROM list_state"))[0])
        if purged > applied:
            return None
        # Counted first: a reload is cheaper than fetching too many lists only to drop them.
        if int(one_row(conn.execute(_COUNT_SINCE_SQL, params))[0]) > MAX_MULTI_UPDATES:
            return None
        rows = conn.execute(_ROWS_SINCE_SQL, params).fetchall()
    finally:
        conn.execute("ROLLBACK")  # read only: nothing to keep
    return [
        lists_cache.ListUpdate(
            version,
            kind,
            int(item_id),
            from_columns(ids, d2, complete) if ids is not None else None,
        )
        for version, kind, item_id, ids, d2, complete in rows
    ]


def catch_up(
    conn: PgConnection,
    settings: Settings,
    client: redis.Redis,
    generation: str,
    applied: int,
    latest: int,
) -> str:
    """Bring ``generation`` from fold ``applied`` to ``latest``, the newest fold (fold lock
    held); reloads when that cannot be done in one MULTI. Says which it did."""
    updates = _lists_since(conn, applied, latest)
    if updates is None:
        reload(conn, settings, reason=f"cache at fold {applied}, wanted {latest}")
        return "reloaded"
    lists_cache.apply_fold(client, generation, latest, updates)
    log.info(
        "lists cache caught up",
        extra={"generation": generation, "from": applied, "to": latest, "lists": len(updates)},
    )
    return "caught_up"


def heal(conn: PgConnection, settings: Settings, client: redis.Redis, latest: int) -> str:
    """Bring the live generation to fold ``latest`` (the newest; fold lock held) whatever
    happened to it: ``unchanged``, ``caught_up`` or ``reloaded``."""
    pointer = lists_cache.read_pointer(client)
    applied = lists_cache.read_applied(client, pointer) if pointer else None
    if pointer is None or applied is None:
        # Cold, flushed, or its ``applied`` evicted: nothing says what its lists include.
        reload(conn, settings, reason="cache cold" if pointer is None else "applied key lost")
        return "reloaded"
    if applied < latest:
        return catch_up(conn, settings, client, pointer, applied, latest)
    if applied > latest:
        # Lists from folds PostgreSQL does not have (a restored database): none can be trusted.
        reload(conn, settings, reason=f"cache at fold {applied}, newest fold {latest}")
        return "reloaded"
    return "unchanged"


def after_fold(
    conn: PgConnection,
    settings: Settings,
    fold_id: int | None,
    prev_fold: int,
    updates: Sequence[lists_cache.ListUpdate],
) -> str:
    """Bring the cache to ``fold_id`` (or heal it when nothing was folded: ``prev_fold`` is
    then the newest fold); says what it did."""
    client = redis_client(settings.redis_cache_url)
    try:
        if fold_id is None:
            return heal(conn, settings, client, prev_fold)
        pointer = lists_cache.read_pointer(client)
        applied = lists_cache.read_applied(client, pointer) if pointer else None
        if pointer is not None and applied == prev_fold:
            if len(updates) <= MAX_MULTI_UPDATES:
                lists_cache.apply_fold(client, pointer, fold_id, updates)
                return "applied"
            reload(conn, settings, reason=f"fold {fold_id}: {len(updates)} lists")
            return "reloaded"
        return heal(conn, settings, client, fold_id)
    except redis.RedisError as exc:
        # PostgreSQL holds the lists; readers of a stale generation still add every change
        # after its fold (those rows are not purged), and a repair brings the cache up to date
        # (the fold task asks for one; beat's periodic fold is the backstop).
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
