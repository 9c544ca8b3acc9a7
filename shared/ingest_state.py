"""Job and job-item state transitions, shared by the web tier and the workers.

Counters are never incremented in place: they are recomputed from ``job_items`` in SQL while the
job row is locked. Two batches of one job committing at the same time therefore serialise on
that lock, and the second one's recount (a new statement, so a new snapshot under READ
COMMITTED) sees the first one's rows: no lost update, and re-running a batch cannot double
count because a job item is counted by its status, not by how often it was processed.

``jobs.updated_at`` is the job's last progress (a recount, a dispatch, a sweeper re-enqueue); the
stalled-work sweeper (workers.maintenance) compares it with ``STALL_AFTER_S``, and a recount that
finds more items finished resets the sweeper's re-enqueue count.

Status rules: ``queued`` until the first item finishes or a worker starts the job, ``running``
while items are pending, then ``succeeded`` (no failures), ``failed`` (nothing succeeded) or
``partial``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text

from shared.db import rowcount
from shared.locks import JOB_DISPATCH_LOCK_SPACE

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_LOCK = text("SELECT status FROM jobs WHERE id = :id FOR UPDATE")

_RECOUNT = text(
    """
    UPDATE jobs SET
      total = c.total,
      done = c.done,
      failed = c.failed,
      status = CASE
        WHEN c.pending > 0 THEN
          CASE WHEN jobs.status = 'queued' AND c.done + c.failed > 0 THEN 'running'
               ELSE jobs.status END
        WHEN c.failed = 0 THEN 'succeeded'
        WHEN c.done = 0 THEN 'failed'
        ELSE 'partial'
      END,
      started_at = COALESCE(jobs.started_at, CASE WHEN c.done + c.failed > 0 THEN now() END),
      finished_at = CASE WHEN c.pending = 0 THEN COALESCE(jobs.finished_at, now()) END,
      requeues = CASE WHEN c.done + c.failed > jobs.done + jobs.failed THEN 0
                      ELSE jobs.requeues END,
      updated_at = now()
    FROM (
      SELECT count(*) AS total,
             count(*) FILTER (WHERE status = 'succeeded') AS done,
             count(*) FILTER (WHERE status = 'failed') AS failed,
             count(*) FILTER (WHERE status = 'pending') AS pending
      FROM job_items WHERE job_id = :id
    ) AS c
    WHERE jobs.id = :id
    RETURNING jobs.status, jobs.total, jobs.done, jobs.failed
    """
)


@dataclass(frozen=True)
class JobCounts:
    status: str
    total: int
    done: int
    failed: int


def lock_job(session: Session, job_id: uuid.UUID) -> str | None:
    """Lock the job row for the rest of the transaction; its status, or None if it is gone.

    Every writer of a job's items takes this lock first, so writers of one job serialise and
    never deadlock on each other's item rows.
    """
    return session.execute(_LOCK, {"id": job_id}).scalar_one_or_none()


def lock_for_dispatch(session: Session, job_id: uuid.UUID) -> None:
    """Serialise the sender of a job's start task with the worker that runs it.

    The web sends a new job's start task before it commits the job (so a broker failure leaves
    nothing behind), and a worker may receive the task before that commit is visible. Both take
    this lock first: the worker then waits for the web's commit or rollback instead of finding
    no job. Held until the transaction ends.
    """
    session.execute(
        text("SELECT pg_advisory_xact_lock(:space, hashtext(:id))"),
        {"space": JOB_DISPATCH_LOCK_SPACE, "id": str(job_id)},
    )


def refresh_job(session: Session, job_id: uuid.UUID) -> JobCounts | None:
    """Recompute counters and status from the job's items (locks the job row)."""
    if lock_job(session, job_id) is None:
        return None
    row = session.execute(_RECOUNT, {"id": job_id}).one()
    return JobCounts(row.status, row.total, row.done, row.failed)


def mark_running(session: Session, job_id: uuid.UUID) -> bool:
    """queued -> running when a worker picks the job up; False when it was not queued."""
    result = session.execute(
        text(
            "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, now()),"
            " updated_at = now() WHERE id = :id AND status = 'queued'"
        ),
        {"id": job_id},
    )
    return bool(rowcount(result))


def fail_job(session: Session, job_id: uuid.UUID, reason: str, message: str) -> JobCounts | None:
    """Give up on a job: its pending items fail with ``reason`` and the job ends ``failed``
    (or ``partial`` when some items had already succeeded)."""
    if lock_job(session, job_id) is None:
        return None
    session.execute(
        text(
            "UPDATE job_items SET status = 'failed', reason = :reason, error = :message,"
            " updated_at = now() WHERE job_id = :id AND status = 'pending'"
        ),
        {"id": job_id, "reason": reason, "message": message},
    )
    session.execute(
        text("UPDATE jobs SET error = :message WHERE id = :id"), {"id": job_id, "message": message}
    )
    return refresh_job(session, job_id)
