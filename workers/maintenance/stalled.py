"""Jobs always reach a final state: re-enqueue the stalled ones, give up on the hopeless ones.

A job is stalled when it is unfinished (``queued`` or ``running``), has made no progress for
``STALL_AFTER_S`` (``jobs.updated_at``: a recount, a dispatch or a re-enqueue), and has no start or
batch task left anywhere in the broker. That is work nobody will ever do: a web process that
died before its task was queued, a task that gave up while the database was unreachable, a
broker that lost its data. Work waiting behind a long queue is not stalled: its task is there.

A stalled job gets its start task again (dispatching is idempotent: only pending items are
sent); after ``STALL_MAX_REQUEUES`` re-enqueues without progress its pending items fail with
reason ``stalled`` and the job ends ``failed`` or ``partial``. Progress resets the count.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text

from shared import task_names
from shared.db import session_scope
from shared.ingest_state import fail_job
from shared.queueing import QUEUE_DEFAULT, task_sender
from shared.vocabulary import JobStatus
from workers.maintenance.outstanding import jobs_with_tasks

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

STALLED_REASON = "stalled"

# Spliced into queries below (their noqa: S608): a constant, every other value in it a bound
# parameter. The statuses are literals so that the planner can use the partial index on active
# jobs (ix_jobs_active_updated_at, whose predicate names them the same way).
_STALE = (
    f"status IN ('{JobStatus.QUEUED}', '{JobStatus.RUNNING}')"
    " AND updated_at < now() - make_interval(secs => :stall)"
)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Jobs idle for longer than the stall time whose tasks are still in the broker.
    waiting: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"requeued": self.requeued, "failed": self.failed, "waiting": self.waiting}


def _stale_jobs(settings: Settings) -> list[uuid.UUID]:
    with session_scope(settings) as session:
        return list(
            session.scalars(
                text(f"SELECT id FROM jobs WHERE {_STALE} ORDER BY updated_at"),  # noqa: S608
                {"stall": settings.stall_after_s},
            )
        )


def _recover(settings: Settings, job_id: uuid.UUID, report: SweepReport) -> None:
    with session_scope(settings) as session:
        # Re-checked under the row lock: a batch that committed since the scan is progress, and
        # a second sweeper holding the row skips it.
        requeues = session.execute(
            text(f"SELECT requeues FROM jobs WHERE id = :id AND {_STALE} FOR UPDATE SKIP LOCKED"),  # noqa: S608
            {"id": job_id, "stall": settings.stall_after_s},
        ).scalar_one_or_none()
        if requeues is None:
            return
        if requeues >= settings.stall_max_requeues:
            message = (
                f"no progress for {settings.stall_after_s:g} s after {requeues} re-enqueues:"
                " given up (are the workers running and the database reachable?)"
            )
            fail_job(session, job_id, STALLED_REASON, message)
            log.error("stalled job given up", extra={"job_id": str(job_id), "requeues": requeues})
            report.failed.append(str(job_id))
            return
        session.execute(
            text("UPDATE jobs SET requeues = requeues + 1, updated_at = now() WHERE id = :id"),
            {"id": job_id},
        )
        # Sent before the commit: a broker failure rolls the count back. The worker's dispatch
        # waits for this transaction's row lock, so it sees the commit.
        task_sender(settings).send_task(
            task_names.START_JOB, args=[str(job_id)], queue=QUEUE_DEFAULT, ignore_result=True
        )
        log.warning(
            "stalled job re-enqueued", extra={"job_id": str(job_id), "requeues": requeues + 1}
        )
        report.requeued.append(str(job_id))


def sweep_stalled_jobs(settings: Settings) -> SweepReport:
    """Re-enqueue or give up on every stalled job; what was done to which."""
    report = SweepReport()
    stale = _stale_jobs(settings)
    if not stale:
        return report
    # Read after the scan: a task that finished in between committed its progress first, so
    # its job either left the scan's results or is re-checked under its lock in _recover.
    busy = jobs_with_tasks(settings.redis_broker_url)
    for job_id in stale:
        if str(job_id) in busy:
            report.waiting.append(str(job_id))
        else:
            _recover(settings, job_id, report)
    return report
