"""Periodic upkeep tasks (queue ``default``), sent by Celery beat (workers.schedule).

No retries: beat sends the next one after its interval. A sweep that cannot reach the database
or the broker says so in one line and ends (``{"skipped": ...}``, workers.tasks.base); the next
one picks up where it would have.
"""

from __future__ import annotations

from typing import Any

from shared import task_names
from shared.config import get_settings
from workers.celery_app import app
from workers.maintenance.media_retention import prune_media
from workers.maintenance.stalled import sweep_stalled_jobs
from workers.tasks.base import TransientPolicy


@app.task(name=task_names.SWEEP_STALLED, on_transient=TransientPolicy.SKIP)
def sweep_stalled() -> dict[str, Any]:
    """Re-enqueue stalled jobs; fail those re-enqueued too often without progress."""
    return sweep_stalled_jobs(get_settings()).as_dict()


@app.task(name=task_names.PRUNE_MEDIA, on_transient=TransientPolicy.SKIP)
def prune_unreferenced_media() -> dict[str, Any]:
    """Delete media no item references once it is older than the grace period."""
    return prune_media(get_settings()).as_dict()
