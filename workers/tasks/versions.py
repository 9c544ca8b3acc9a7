"""Model-version tasks: a version's catch-up (queue ``ingest.<version>``: its own workers
embed) and a retired version's purge (``default``)."""

from __future__ import annotations

from typing import Any

from shared import task_names
from shared.config import get_settings
from shared.search.scheduling import request_fold
from shared.versions.routing import clear_catch_up, send_catch_up, send_purge
from workers.celery_app import app
from workers.search.fold import FoldLockBusy
from workers.tasks.base import TransientPolicy
from workers.tasks.registration import task
from workers.versions.catch_up import catch_up_chunk
from workers.versions.purge import purge

_RETRY_FOREVER = TransientPolicy.RETRY_FOREVER


@task(task_names.CATCH_UP_VERSION, on_transient=_RETRY_FOREVER)
def catch_up(version: str, reason: str = "", after_id: int = 0) -> dict[str, Any]:
    """Embed the next chunk of ready items ``version`` lacks; the next chunk is sent on."""
    from shared.ml.pipeline import get_pipeline  # frameworks load in the worker, on first use

    settings = get_settings()
    if after_id == 0:
        # Cleared as a pass starts: an item made ready while it runs asks for the next pass.
        clear_catch_up(settings, version)
    report = catch_up_chunk(settings, get_pipeline(settings), version, after_id)
    if report.more:
        send_catch_up(settings, version, reason=reason, after_id=report.last_id)
    if report.embedded:
        request_fold(settings, reason=f"catch-up of {version}", model_version=version)
    return report.as_dict()


@task(task_names.PURGE_VERSION, on_transient=_RETRY_FOREVER)
def purge_version(version: str) -> dict[str, Any]:
    """Delete everything of a retired version (workers.versions.purge); idempotent."""
    settings = get_settings()
    try:
        return purge(settings, version, app)
    except FoldLockBusy:
        # A fold runs: this worker goes back to its other tasks and the purge comes back later.
        send_purge(settings, version, countdown=settings.fold_lock_retry_s)
        return {"version": version, "requeued": True}
