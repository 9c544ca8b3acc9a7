"""Ingestion tasks: split a job into batches (``start_job``, default queue), then fetch, detect,
crop and embed each batch (``process_batch``, ingest queue).

The work itself is in workers.ingestion (dispatch, batch) and is safe to run twice. The retry
policy is the tasks' base class's (workers.tasks.base): named transient errors (database or broker
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
from workers.ingestion.batch import BatchInterrupted, BatchReport, get_pipeline_for, run_batch
from workers.ingestion.dispatch import dispatch_job
from workers.ingestion.results import fail_pending
from workers.tasks.base import RetryTransient, VisrecTask
from workers.tasks.registration import task

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


@task(task_names.START_JOB, base=_StartJobTask)
def start_job(job_id: str) -> int:
    return dispatch_job(get_settings(), uuid.UUID(job_id))


@task(task_names.INGEST_BATCH, base=_BatchTask)
def process_batch(
    job_id: str,
    job_item_ids: list[int],
    deliveries_to_return: list[int] | None = None,
    forgive: list[int] | None = None,
) -> dict[str, Any]:
    """``job_item_ids``: ids of ``job_items`` rows of ``job_id`` (not item ids).
    ``deliveries_to_return``: job items whose delivery the previous try counted before a
    transient error (not a crash). ``forgive`` is its name before this release, kept so that a
    retry queued by an older worker still returns its deliveries."""
    returned = [*(deliveries_to_return or ()), *(forgive or ())]
    outcome = run_batch(
        get_settings(), uuid.UUID(job_id), job_item_ids, deliveries_to_return=returned
    )
    if isinstance(outcome, BatchInterrupted):
        retry = {"deliveries_to_return": list(outcome.deliveries_to_return)}
        raise RetryTransient(outcome.error, kwargs=retry) from outcome.error
    return {
        "job_id": outcome.job_id,
        "succeeded": outcome.succeeded,
        "failed": outcome.failed,
        "skipped": outcome.skipped,
        "already_done": outcome.already_done,
        "status": outcome.status,
    }
