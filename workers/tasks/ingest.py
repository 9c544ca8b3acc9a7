"""Ingestion tasks: split a job into batches (``start_job``, default queue), then fetch, detect,
crop and embed each batch (``process_batch``, ingest queue).

The work itself is in workers.ingestion.batch and is safe to run twice; these tasks add the
retry policy: named transient errors (database or broker unreachable) retry with backoff, and
anything else fails the batch's items instead of leaving them pending forever. When the retries
run out the items stay pending: the database is what is missing, and the stalled-work sweeper
(workers.maintenance) re-enqueues the job once it has made no progress for ``STALL_AFTER_S``.
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

from shared import task_names
from shared.config import get_settings
from shared.db import session_scope
from shared.ingest_state import fail_job
from workers.celery_app import app
from workers.ingestion.batch import (
    BatchReport,
    dispatch_job,
    fail_pending,
    get_pipeline_for,
    run_batch,
)
from workers.ingestion.errors import TRANSIENT_ERRORS

__all__ = ["BatchReport", "get_pipeline_for", "process_batch", "run_batch", "start_job"]

log = logging.getLogger(__name__)


def _backoff(retries: int) -> float:
    return min(60.0, 2.0**retries) + random.uniform(0, 1)


@app.task(name=task_names.START_JOB, bind=True, max_retries=None)
def start_job(self: Any, job_id: str) -> int:
    settings = get_settings()
    try:
        count = dispatch_job(settings, uuid.UUID(job_id))
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= settings.task_max_retries:
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    except Exception:
        log.exception("job dispatch failed", extra={"job_id": job_id})
        with session_scope(settings) as session:
            fail_job(
                session,
                uuid.UUID(job_id),
                "internal_error",
                "the job could not be started because of an error on our side",
            )
        raise
    return count


@app.task(name=task_names.INGEST_BATCH, bind=True, max_retries=None)
def process_batch(
    self: Any, job_id: str, job_item_ids: list[int], forgive: list[int] | None = None
) -> dict[str, Any]:
    """``job_item_ids``: ids of ``job_items`` rows of ``job_id`` (not item ids). ``forgive``: job
    items whose delivery the previous try counted before a transient error (not a crash)."""
    settings = get_settings()
    counted = list(forgive or [])
    try:
        report = run_batch(settings, uuid.UUID(job_id), job_item_ids, counted=counted)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= settings.task_max_retries:
            log.error(
                "batch gave up after retries; its items stay pending for the sweeper",
                extra={"job_id": job_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            raise
        log.warning(
            "transient error; batch will retry",
            extra={"job_id": job_id, "error": f"{type(exc).__name__}: {exc}"},
        )
        raise self.retry(
            exc=exc, countdown=_backoff(self.request.retries), kwargs={"forgive": counted}
        ) from exc
    except Exception:
        log.exception("batch failed", extra={"job_id": job_id})
        fail_pending(
            settings,
            uuid.UUID(job_id),
            job_item_ids,
            "the batch stopped because of an error on our side",
        )
        raise
    return {
        "job_id": report.job_id,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "skipped": report.skipped,
        "already_done": report.already_done,
        "status": report.status,
    }
