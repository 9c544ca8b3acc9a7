"""A job's start: mark it running and send one batch task per chunk of its pending items."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select

from shared import task_names
from shared.db import session_scope
from shared.ingest_state import lock_for_dispatch, lock_job, mark_running, refresh_job
from shared.models import JobItem
from shared.queueing import task_sender
from shared.versions.routing import ingest_queue
from shared.vocabulary import FINISHED_JOB_STATUSES, JobItemStatus

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)


def _claim_pending(settings: Settings, job_id: uuid.UUID) -> list[int] | None:
    """The job's pending job items in job order, the job now running; None when there is no
    job to run (gone, or finished)."""
    with session_scope(settings) as session:
        # Waits for the sender's commit: the web sends this task before committing the job.
        lock_for_dispatch(session, job_id)
        status = lock_job(session, job_id)
        if status is None or status in FINISHED_JOB_STATUSES:
            log.info("job not dispatched", extra={"job_id": str(job_id), "status": status})
            return None
        mark_running(session, job_id)
        return list(
            session.scalars(
                select(JobItem.id)
                .where(JobItem.job_id == job_id, JobItem.status == JobItemStatus.PENDING)
                .order_by(JobItem.position)
            )
        )


def dispatch_job(settings: Settings, job_id: uuid.UUID) -> int:
    """Mark the job running and send one batch task per chunk of its pending items; the number
    of batches sent."""
    pending = _claim_pending(settings, job_id)
    if pending is None:
        return 0
    with session_scope(settings) as session:
        queue = ingest_queue(session)  # the serving version's workers (versions.routing)
    size = max(1, settings.ingest_batch_size)
    batches = [pending[i : i + size] for i in range(0, len(pending), size)]
    sender = task_sender(settings)
    for batch in batches:
        # Progress is read from PostgreSQL, never from the result: without ignore_result this
        # worker process would subscribe to every batch's result channel and keep it.
        sender.send_task(
            task_names.INGEST_BATCH,
            args=[str(job_id), batch],
            queue=queue,
            ignore_result=True,
        )
    log.info(
        "job dispatched",
        extra={"job_id": str(job_id), "items": len(pending), "batches": len(batches)},
    )
    if not pending:
        with session_scope(settings) as session:
            refresh_job(session, job_id)
    return len(batches)
