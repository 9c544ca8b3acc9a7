"""Periodic upkeep tasks (queue ``default``), sent by Celery beat (workers.schedule).

No retries: beat sends the next one after its interval, and a sweep that found the database
unreachable has nothing to add to the next one.
"""

from __future__ import annotations

from shared import task_names
from shared.config import get_settings
from workers.celery_app import app
from workers.maintenance.media_retention import prune_media
from workers.maintenance.stalled import sweep_stalled_jobs


@app.task(name=task_names.SWEEP_STALLED)
def sweep_stalled() -> dict[str, list[str]]:
    """Re-enqueue stalled jobs; fail those re-enqueued too often without progress."""
    return sweep_stalled_jobs(get_settings()).as_dict()


@app.task(name=task_names.PRUNE_MEDIA)
def prune_unreferenced_media() -> dict[str, int]:
    """Delete media no item references once it is older than the grace period."""
    return prune_media(get_settings()).as_dict()
