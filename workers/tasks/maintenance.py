"""Upkeep tasks (queue ``default``): periodic ones sent by Celery beat (workers.schedule), and
the one-off crop backfill an operator sends.

Periodic ones do not retry: beat sends the next one after its interval. A sweep that cannot
reach the database or the broker says so in one line and ends (``{"skipped": ...}``,
workers.tasks.base); the next one picks up where it would have. The backfill has no next one,
so it retries like a batch; it is safe to repeat from any point.
"""

from __future__ import annotations

from typing import Any

from shared import task_names
from shared.config import get_settings
from shared.queueing import QUEUE_DEFAULT, task_sender
from workers.maintenance import media_retention
from workers.maintenance.backfill_crops import (
    DEFAULT_BATCH_ITEMS,
    DEFAULT_TASK_ITEMS,
    backfill_pass,
)
from workers.maintenance.stalled import sweep_stalled_jobs
from workers.tasks.base import TransientPolicy
from workers.tasks.registration import task


@task(task_names.SWEEP_STALLED, on_transient=TransientPolicy.SKIP)
def sweep_stalled() -> dict[str, Any]:
    """Re-enqueue stalled jobs; fail those re-enqueued too often without progress."""
    return sweep_stalled_jobs(get_settings()).as_dict()


@task(task_names.PRUNE_MEDIA, on_transient=TransientPolicy.SKIP)
def prune_media() -> dict[str, Any]:
    """Delete media no item references once it is older than the grace period."""
    return media_retention.prune_media(get_settings()).as_dict()


@task(task_names.BACKFILL_CROPS, on_transient=TransientPolicy.RETRY)
def backfill_crops(
    after: int = 0, batch_items: int = DEFAULT_BATCH_ITEMS, max_items: int = DEFAULT_TASK_ITEMS
) -> dict[str, Any]:
    """Store the missing crops of up to ``max_items`` items after item id ``after``, then send
    itself on for the rest: job dispatch shares this queue and must not wait a whole pass."""
    settings = get_settings()
    report = backfill_pass(settings, after=after, max_items=max_items, batch_items=batch_items)
    if not report.finished:
        # ignore_result: nobody waits for it, and this worker must not subscribe to its result.
        task_sender(settings).send_task(
            task_names.BACKFILL_CROPS,
            kwargs={
                "after": report.last_item_id,
                "batch_items": batch_items,
                "max_items": max_items,
            },
            queue=QUEUE_DEFAULT,
            ignore_result=True,
        )
    return report.as_dict()
