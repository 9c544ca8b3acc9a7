"""What Celery beat sends, and how often: ``celery -A workers.celery_app beat`` (one per stack).

Each message expires after one interval: when the workers are busy or down, stale sweeps are
dropped instead of piling up behind the work they are meant to check on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared import task_names
from shared.queueing import QUEUE_DEFAULT, QUEUE_LISTS

if TYPE_CHECKING:
    from shared.config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def entry(task: str, every_s: float, queue: str = QUEUE_DEFAULT) -> dict[str, Any]:
        return {
            "task": task,
            "schedule": every_s,
            "options": {"queue": queue, "expires": every_s},
        }

    return {
        "sweep-stalled-jobs": entry(task_names.SWEEP_STALLED, settings.sweep_interval_s),
        "prune-media": entry(task_names.PRUNE_MEDIA, settings.media_sweep_interval_s),
        # Batches and deletes ask for a fold themselves; this one catches a request that was
        # lost (broker blip), reloads a cold lists cache and brings one left behind a fold (its
        # write failed) up to date with no new change. Readers are exact meanwhile.
        "fold-lists": entry(task_names.FOLD_LISTS, settings.fold_interval_s, QUEUE_LISTS),
        # A build whose catch-up pass was lost (worker died mid-build, task gone, broker
        # flushed) starts a new pass; a pass running or queued is left alone.
        "resume-builds": entry(task_names.RESUME_BUILDS, settings.build_resume_interval_s),
    }
