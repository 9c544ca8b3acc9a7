"""Retire's clean-up: everything of a retired version goes, in PostgreSQL, Redis and every worker's
memory.

Run as a task (``workers.tasks.versions.purge_version``, default queue) after the web marked the
version retired: its vectors (in chunks, each its own transaction, so a million-item version
does not hold one huge transaction), then, under the fold lock (no fold may write the version's
lists back meanwhile), the change rows its deletion logged, its lists and its cache keys in
every generation; then every worker is told to drop its matrices (a broadcast), and the row is
stamped ``purged_at``. Safe to run again; refused for a version that is not retired.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from shared.db import rowcount, session_scope
from shared.redis_clients import redis_client
from shared.search import lists_cache
from shared.search.scheduling import clear_fold_pending
from shared.versions.registry import is_retired, mark_purged
from shared.versions.routing import clear_catch_up
from workers.search.fold import advisory_lock, connect
from workers.versions.passes import forget_pass

if TYPE_CHECKING:
    from celery import Celery

    from shared.config import Settings

log = logging.getLogger(__name__)

VECTOR_CHUNK = 5000


def _delete_vectors(settings: Settings, version: str) -> int:
    deleted = 0
    while True:
        with session_scope(settings) as session:
            if not is_retired(session, version, lock=True):
                return deleted  # registered again by a starting worker: keep what it writes
            n = rowcount(
                session.execute(
                    text(
                        "DELETE FROM embeddings WHERE id IN (SELECT id FROM embeddings"
                        " WHERE model_version = :v LIMIT :n)"
                    ),
                    {"v": version, "n": VECTOR_CHUNK},
                )
            )
        deleted += n
        if n < VECTOR_CHUNK:
            return deleted


def _delete_cache_keys(settings: Settings, version: str) -> int:
    client = redis_client(settings.redis_cache_url)
    pattern = f"{lists_cache.PREFIX}gen:*:l:{version}:*"
    batch: list[bytes] = []
    removed = 0
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed


def purge(settings: Settings, version: str, app: Celery | None = None) -> dict[str, Any]:
    """Raises workers.search.fold.FoldLockBusy (having deleted only vectors) while a fold runs."""
    with session_scope(settings) as session:
        if not is_retired(session, version):
            return {"version": version, "refused": "not_retired"}
    vectors = _delete_vectors(settings, version)
    with connect(settings) as conn, advisory_lock(conn), session_scope(settings) as session:
        if not is_retired(session, version, lock=True):
            return {"version": version, "refused": "not_retired", "vectors": vectors}
        changes = rowcount(
            session.execute(
                text("DELETE FROM list_changes WHERE model_version = :v"), {"v": version}
            )
        )
        lists = rowcount(
            session.execute(
                text("DELETE FROM neighbour_lists WHERE model_version = :v"), {"v": version}
            )
        )
        mark_purged(session, version)
        session.flush()
        keys = _delete_cache_keys(settings, version)
    clear_fold_pending(settings, version)
    clear_catch_up(settings, version)
    forget_pass(settings, version)
    if app is not None:
        app.control.broadcast("drop_version", arguments={"version": version})
    report = {"version": version, "vectors": vectors, "changes": changes, "lists": lists}
    report["cache_keys"] = keys
    log.info("model version purged", extra=report)
    return report
