"""Neighbour-list maintenance tasks (queue ``lists``): the debounced fold and cache reloads."""

from __future__ import annotations

from typing import Any

from shared import task_names
from shared.config import get_settings
from shared.search.scheduling import (
    clear_fold_pending,
    clear_reload_pending,
    request_fold,
    resend_cache_reload,
)
from workers.celery_app import app
from workers.search import cache_writer
from workers.search.device import list_device
from workers.search.fold import FoldLockBusy, advisory_lock, connect, fold
from workers.tasks.base import TransientPolicy

# Both are safe to repeat: a database or broker outage is waited out, never given up on.
_RETRY_FOREVER = TransientPolicy.RETRY_FOREVER


@app.task(name=task_names.FOLD_LISTS, on_transient=_RETRY_FOREVER)
def fold_lists(reason: str = "", model_version: str | None = None) -> dict[str, Any]:
    """Fold every pending embedding change (of ``model_version``, when named) into the
    neighbour lists (exact; idempotent)."""
    settings = get_settings()
    # Cleared first: changes committed while this runs must schedule the next fold.
    clear_fold_pending(settings, model_version)
    try:
        device = list_device(settings)
        return fold(settings, device=device, reason=reason, model_version=model_version).as_dict()
    except FoldLockBusy:
        # Another worker folds now; its snapshot may miss changes this request was sent for.
        sent = request_fold(
            settings,
            reason=reason,
            delay_s=settings.fold_lock_retry_s,
            model_version=model_version,
        )
        return {"requeued": True, "sent": sent, "countdown_s": settings.fold_lock_retry_s}


@app.task(name=task_names.RELOAD_LISTS_CACHE, on_transient=_RETRY_FOREVER)
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
