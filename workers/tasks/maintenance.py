"""Periodic upkeep tasks (queue ``default``), sent by Celery beat (workers.schedule).

No retries: beat sends the next one after its interval. A sweep that cannot reach the database
or the broker says so in one line and ends; the next one picks up where it would have.
"""

from __future__ import annotations

import logging
from typing import Any

from shared import task_names
from shared.config import get_settings
from workers.celery_app import app
from workers.ingestion.errors import TRANSIENT_ERRORS
from workers.maintenance.media_retention import prune_media
from workers.maintenance.stalled import sweep_stalled_jobs

log = logging.getLogger(__name__)


def _unreachable(task: str, exc: BaseException) -> dict[str, Any]:
    log.warning(
        "upkeep skipped: a service is unreachable",
        extra={"task": task, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]},
    )
    return {"skipped": type(exc).__name__}


@app.task(name=task_names.SWEEP_STALLED)
def sweep_stalled() -> dict[str, Any]:
    """Re-enqueue stalled jobs; fail those re-enqueued too often without progress."""
    try:
        return sweep_stalled_jobs(get_settings()).as_dict()
    except TRANSIENT_ERRORS as exc:
        return _unreachable(task_names.SWEEP_STALLED, exc)


@app.task(name=task_names.PRUNE_MEDIA)
def prune_unreferenced_media() -> dict[str, Any]:
    """Delete media no item references once it is older than the grace period."""
    try:
        return prune_media(get_settings()).as_dict()
    except TRANSIENT_ERRORS as exc:
        return _unreachable(task_names.PRUNE_MEDIA, exc)
