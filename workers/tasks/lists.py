"""Neighbour-list maintenance tasks (queue ``lists``): the debounced fold, cache reloads and
cache repairs (lists written back, a generation left behind brought up to date)."""

from __future__ import annotations

from typing import Any

from shared import task_names
from shared.config import get_settings
from shared.search.scheduling import (
    clear_fold_pending,
    clear_reload_pending,
    clear_repair_pending,
    request_cache_repair,
    request_fold,
    resend_cache_reload,
)
from workers.search import cache_repair, cache_writer
from workers.search.device import list_device
from workers.search.fold import FoldLockBusy, advisory_lock, connect, fold
from workers.tasks.base import TransientPolicy
from workers.tasks.registration import task

# Both are safe to repeat: a database or broker outage is waited out, never given up on.
_RETRY_FOREVER = TransientPolicy.RETRY_FOREVER


@task(task_names.FOLD_LISTS, on_transient=_RETRY_FOREVER)
def fold_lists(reason: str = "", model_version: str | None = None) -> dict[str, Any]:
    """Fold every pending embedding change (of ``model_version``, when named) into the
    neighbour lists (exact; idempotent)."""
    settings = get_settings()
    # Cleared first: changes committed while this runs must schedule the next fold.
    clear_fold_pending(settings, model_version)
    try:
        device = list_device(settings)
        report = fold(settings, device=device, reason=reason, model_version=model_version)
    except FoldLockBusy:
        # Another worker folds now; its snapshot may miss changes this request was sent for.
        sent = request_fold(
            settings,
            reason=reason,
            delay_s=settings.fold_lock_retry_s,
            model_version=model_version,
        )
        return {"requeued": True, "sent": sent, "countdown_s": settings.fold_lock_retry_s}
    if report.cache == "unavailable" and report.fold_id is not None:
        # The cache missed this fold: bring it up to date soon rather than on the next change.
        request_cache_repair(
            settings, reason=f"fold {report.fold_id}", delay_s=settings.cache_repair_delay_s
        )
    return report.as_dict()


@task(task_names.RELOAD_LISTS_CACHE, on_transient=_RETRY_FOREVER)
def reload_cache(reason: str = "") -> dict[str, Any]:
    """Copy the lists from PostgreSQL into a fresh cache generation (the cache was lost)."""
    settings = get_settings()
    try:
        with connect(settings) as conn, advisory_lock(conn):
            result = cache_writer.reload(conn, settings, reason=reason)
    except FoldLockBusy:
        resend_cache_reload(settings, reason=reason, delay_s=settings.fold_lock_retry_s)
        return {"requeued": True, "countdown_s": settings.fold_lock_retry_s}
    except BaseException:
        clear_reload_pending(settings)
        raise
    clear_reload_pending(settings)
    return result


# Upkeep: a repair that cannot reach a service ends; the next miss or fold asks again, and
# beat's periodic fold brings a generation left behind up to date anyway.
@task(task_names.REPAIR_LISTS_CACHE, on_transient=TransientPolicy.SKIP)
def repair_cache(reason: str = "") -> dict[str, Any]:
    """Bring the lists cache to the newest fold and write back the lists pages found missing
    (workers.search.cache_repair); safe to repeat."""
    settings = get_settings()
    # Cleared first: misses noted while this runs must schedule the next repair.
    clear_repair_pending(settings)
    try:
        with connect(settings) as conn, advisory_lock(conn):
            return cache_repair.repair(conn, settings).as_dict()
    except FoldLockBusy:
        # A fold or reload holds the lock; the noted misses wait in their set meanwhile.
        sent = request_cache_repair(settings, reason=reason, delay_s=settings.fold_lock_retry_s)
        return {"requeued": True, "sent": sent, "countdown_s": settings.fold_lock_retry_s}
