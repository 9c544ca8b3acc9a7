"""The cache-rebuild task (queue ``default``), scheduled debounced by shared.search.scheduling."""

from __future__ import annotations

from shared import task_names
from shared.config import get_settings
from shared.search.rebuild import rebuild_cache
from shared.search.scheduling import clear_pending
from workers.celery_app import app
from workers.ingestion.errors import TRANSIENT_ERRORS


@app.task(
    name=task_names.REBUILD_CACHE,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=get_settings().task_max_retries,
)
def rebuild(reason: str = "") -> dict:
    """Write a new cache generation from PostgreSQL and switch the pointer to it."""
    settings = get_settings()
    # Cleared first: writes landing while this runs must schedule the next rebuild.
    clear_pending(settings)
    return rebuild_cache(settings, reason=reason).as_dict()
