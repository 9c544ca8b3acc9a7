"""Ingestion jobs: creating one (its items, the job, its start task) and reading its progress.

A job is written in one transaction: items, the job and its job items, then the start task is
sent while that transaction is still open, and only then does it commit. A broker that cannot be
reached rolls everything back (Unavailable, nothing half-created), and a process that dies at
any point leaves either no job or a job whose task is already queued (the worker waits for the
commit: lock_for_dispatch). Whether an image is usable is the worker's decision: a bad file
fails as its own item, not the whole job.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import func, select

from shared import task_names
from shared.ingest_state import lock_for_dispatch
from shared.media import MediaStore, StoredMedia
from shared.models import Job, JobItem
from shared.queueing import QUEUE_DEFAULT
from shared.vocabulary import FINISHED_JOB_STATUSES, JobItemStatus, JobStatus
from web.resources import celery_client, db, settings
from web.services.errors import Invalid, NotFound, Unavailable
from web.services.items import upsert_item

log = logging.getLogger(__name__)


@dataclass
class NewItem:
    """One item of a job to create: its SKU and exactly one source (uploaded bytes, URL, path)."""

    sku: str
    attributes: dict[str, Any] | None
    upload: IO[bytes] | None = None
    url: str | None = None
    path: str | None = None
    stored: StoredMedia | None = None


def check_unique(items: Sequence[NewItem]) -> None:
    """A SKU may appear once per job (Invalid ``duplicate_sku`` otherwise)."""
    counts = Counter(item.sku for item in items)
    repeated = sorted(sku for sku, n in counts.items() if n > 1)
    if repeated:
        raise Invalid(
            "duplicate_sku",
            f"each SKU may appear once per job; {repeated[0]!r} appears more than once",
            details={"repeated": repeated[:10]},
        )


def _job_source(items: Sequence[NewItem]) -> str:
    kinds = {"upload" if i.upload is not None else "url" if i.url else "path" for i in items}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def create_job(items: Sequence[NewItem]) -> Job:
    """Store the uploads, write the job and queue it; the committed job.

    Unavailable (``queue_unavailable``) when its start task cannot be sent: then nothing but
    the uploaded bytes was kept (media retention removes bytes no item references).
    """
    check_unique(items)
    media = MediaStore(settings().media_root)
    for new in items:
        if new.upload is not None:
            # Bytes are kept as sent; the worker decides whether they are an image.
            new.stored = media.put_stream(new.upload)
    session = db()
    try:
        job = Job(
            id=uuid.uuid4(), status=JobStatus.QUEUED, source=_job_source(items), total=len(items)
        )
        session.add(job)
        session.flush()
        # Rows are locked in one canonical order (SKU, by code point, as PostgreSQL's "C"
        # collation sorts them) whatever the submission order: two jobs naming the same items in
        # different orders, or a job and a worker's batch commit, then wait for each other
        # instead of deadlocking. Positions keep the submitted order.
        by_sku = sorted(enumerate(items), key=lambda pair: pair[1].sku)
        for position, new in by_sku:
            item_id = upsert_item(
                session, new.sku, new.attributes, stored=new.stored, url=new.url, path=new.path
            )
            session.add(JobItem(job_id=job.id, item_id=item_id, position=position, sku=new.sku))
        session.flush()
        lock_for_dispatch(session, job.id)
        _enqueue(job)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    log.info(
        "job created", extra={"job_id": str(job.id), "items": len(items), "source": job.source}
    )
    return job


def _enqueue(job: Job) -> None:
    try:
        # Nobody reads this task's result: without ignore_result the client also subscribes to
        # it on the result backend, which retries for ~20 s when the broker is down, all of it
        # inside the open transaction.
        celery_client().send_task(
            task_names.START_JOB, args=[str(job.id)], queue=QUEUE_DEFAULT, ignore_result=True
        )
    except Exception:  # any broker failure: the caller rolls the job back
        log.exception("could not enqueue job", extra={"job_id": str(job.id)})
        raise Unavailable(
            "queue_unavailable",
            "The job could not be queued, so nothing was created. Try again later.",
        ) from None


@dataclass(frozen=True)
class FailedItem:
    position: int
    sku: str
    reason: str | None
    error: str | None


@dataclass(frozen=True)
class JobReport:
    """A job's state, its counters and one page of its failed items (by position)."""

    id: uuid.UUID
    status: str
    source: str
    total: int
    done: int
    failed: int
    skipped: int
    pending: int
    model_version: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    failures: list[FailedItem]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_JOB_STATUSES

    @property
    def progress(self) -> float:
        """Finished items / total, 0..1 (an empty job is complete)."""
        return round((self.done + self.failed) / self.total, 4) if self.total else 1.0

    @property
    def percent(self) -> int:
        """Finished items in whole percent, for a progress bar (0 for an empty job)."""
        return int(100 * (self.done + self.failed) / self.total) if self.total else 0


def job_report(job_id: str, page: int = 1, per_page: int = 50) -> JobReport:
    """NotFound (``job_not_found``) for an unknown or malformed id."""
    try:
        key: uuid.UUID | None = uuid.UUID(job_id)
    except ValueError:
        key = None
    session = db()
    job = session.get(Job, key) if key else None
    if job is None:
        raise NotFound("job_not_found", f"No job has the id {job_id!r}.")
    counts = session.execute(
        select(
            func.count().filter(JobItem.status == JobItemStatus.PENDING).label("pending"),
            func.count().filter(JobItem.skipped.is_(True)).label("skipped"),
        ).where(JobItem.job_id == job.id)
    ).one()
    failed_rows = session.execute(
        select(JobItem.position, JobItem.sku, JobItem.reason, JobItem.error)
        .where(JobItem.job_id == job.id, JobItem.status == JobItemStatus.FAILED)
        .order_by(JobItem.position)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return JobReport(
        id=job.id,
        status=job.status,
        source=job.source,
        total=job.total,
        done=job.done,
        failed=job.failed,
        skipped=counts.skipped,
        pending=counts.pending,
        model_version=job.model_version,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        failures=[FailedItem(r.position, r.sku, r.reason, r.error) for r in failed_rows],
    )
