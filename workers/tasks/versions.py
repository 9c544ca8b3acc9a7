"""Model-version tasks: a version's catch-up (queue ``ingest.<version>``: its own workers
embed), beat's resume of lost builds and a retired version's purge (``default``)."""

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
from workers.versions.passes import end_pass, hold_pass, resume_lost_builds, start_pass
from workers.versions.purge import purge

_RETRY_FOREVER = TransientPolicy.RETRY_FOREVER


@task(task_names.CATCH_UP_VERSION, on_transient=_RETRY_FOREVER)
def catch_up(
    version: str, reason: str = "", after_id: int = 0, pass_token: str = ""
) -> dict[str, Any]:
    """Embed the next chunk of ready items ``version`` lacks; the next chunk is sent on.

    One pass at a time (workers.versions.passes): a chunk of a pass that a newer one
    superseded ends it. A chunk without a token (sent before passes had one) goes on."""
    from shared.ml.pipeline import get_pipeline  # frameworks load in the worker, on first use

    settings = get_settings()
    if after_id == 0:
        # Cleared as a pass starts: an item made ready while it runs asks for the next pass.
        clear_catch_up(settings, version)
        pass_token = start_pass(settings, version)
    elif pass_token and not hold_pass(settings, version, pass_token):
        return {"version": version, "after_id": after_id, "superseded": True}
    report = catch_up_chunk(settings, get_pipeline(settings), version, after_id)
    if report.more:
        send_catch_up(
            settings, version, reason=reason, after_id=report.last_id, pass_token=pass_token
        )
    elif pass_token:
        end_pass(settings, version, pass_token)
    if report.embedded:
        request_fold(settings, reason=f"catch-up of {version}", model_version=version)
    return report.as_dict()


@task(task_names.RESUME_BUILDS, on_transient=TransientPolicy.SKIP)
def resume_builds() -> dict[str, Any]:
    """Beat's check: a build whose pass was lost (its worker died, the task vanished, the
    broker was flushed) starts a new pass; one running or queued is left alone."""
    return resume_lost_builds(get_settings())


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
