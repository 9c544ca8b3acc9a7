"""Ingestion tasks: split a job into batches (``start_job``, default queue), then fetch, detect,
crop and embed each batch (``process_batch``, ingest queue).

The work itself is in workers.ingestion.batch and is safe to run twice. The retry policy is the
tasks' base class's (workers.tasks.base): named transient errors (database or broker
unreachable) retry with backoff, and when the retries run out the items stay pending: the
database is what is missing, and the stalled-work sweeper (workers.maintenance) re-enqueues the
job once it has made no progress for ``STALL_AFTER_S``. Any other error fails what the task
owns (the job, or the batch's pending items) instead of leaving it pending for ever.
"""

from __future__ import annotations

import uuid
from typing import Any

from typing_extensions import override

from shared import task_names
from shared.config import get_settings
from shared.db import session_scope
from shared.ingest_state import fail_job
from workers.celery_app import app
from workers.errors import TRANSIENT_ERRORS
from workers.ingestion.batch import (
    BatchReport,
    dispatch_job,
    fail_pending,
    get_pipeline_for,
    run_batch,
)
from workers.tasks.base import RetryTransient, VisrecTask

__all__ = ["BatchReport", "get_pipeline_for", "process_batch", "run_batch", "start_job"]


class _StartJobTask(VisrecTask):
    @override
    def mark_failed(self, exc: BaseException, job_id: str, *_: Any, **__: Any) -> None:
        with session_scope(get_settings()) as session:
            fail_job(
                session,
                uuid.UUID(job_id),
                "internal_error",
                "the job could not be started because of an error on our side",
            )


class _BatchTask(VisrecTask):
    @override
    def mark_failed(
        self, exc: BaseException, job_id: str, job_item_ids: list[int], *_: Any, **__: Any
    ) -> None:
        fail_pending(
            get_settings(),
            uuid.UUID(job_id),
            job_item_ids,
            "the batch stopped because of an error on our side",
        )


@app.task(name=task_names.START_JOB, base=_StartJobTask)
def start_job(job_id: str) -> int:
    return dispatch_job(get_settings(), uuid.UUID(job_id))


@app.task(name=task_names.INGEST_BATCH, base=_BatchTask)
def process_batch(
    job_id: str, job_item_ids: list[int], forgive: list[int] | None = None
) -> dict[str, Any]:
    """``job_item_ids``: ids of ``job_items`` rows of ``job_id`` (not item ids). ``forgive``: job
    items whose delivery the previous try counted before a transient error (not a crash)."""
    counted = list(forgive or [])
    try:
        report = run_batch(get_settings(), uuid.UUID(job_id), job_item_ids, counted=counted)
    except TRANSIENT_ERRORS as exc:
        # The retry takes back the deliveries this try counted: the worker did not die on them.
        raise RetryTransient(exc, kwargs={"forgive": counted}) from exc
    return {
        "job_id": report.job_id,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "skipped": report.skipped,
        "already_done": report.already_done,
        "status": report.status,
    }
