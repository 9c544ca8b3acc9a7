"""One ingestion batch: fetch each item's bytes, run the model pipeline once, commit the outcomes.

Everything here is safe to run twice. Work is loaded only for job items still ``pending``
(workers.ingestion.work); bytes are fetched and stored outside any transaction
(workers.ingestion.photo_bytes), as are the crops of embedded photos
(workers.ingestion.inference); all outcomes are committed in one transaction
(workers.ingestion.results). The Celery tasks that call this live in workers.tasks.ingest.

Every delivery of a photo to the models is counted before the work and committed
(workers.ingestion.deliveries). The first delivery of a batch runs its photos together; a batch
with photos that were delivered before runs them one at a time, each counted just before its
turn, so only the photo that kills the worker accumulates deliveries and fails once it has had
``item_max_deliveries``; its neighbours complete.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text

from shared.db import session_scope
from shared.ingest_state import mark_running
from shared.media import MediaStore
from shared.vocabulary import FINISHED_JOB_STATUSES
from workers.errors import TRANSIENT_ERRORS
from workers.ingestion.deliveries import count_deliveries, return_deliveries
from workers.ingestion.inference import Models, embed
from workers.ingestion.photo_bytes import read_photo
from workers.ingestion.results import Tally, commit_outcomes
from workers.ingestion.work import (
    Failed,
    Outcome,
    PendingItem,
    Skipped,
    StoredPhoto,
    is_unchanged,
    load_pending,
)
from workers.versions.keeping import after_batch

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)


@dataclass
class BatchReport(Tally):
    """What a batch did, summed over its commits (a :class:`Tally` of them all); ``status``:
    the job's status after the last."""

    job_id: str = ""

    def add(self, tally: Tally) -> None:
        self.succeeded += tally.succeeded
        self.failed += tally.failed
        self.skipped += tally.skipped
        self.already_done += tally.already_done
        self.superseded += tally.superseded
        self.reasons.update(tally.reasons)
        if tally.status is not None:
            self.status = tally.status


@dataclass(frozen=True)
class BatchInterrupted:
    """A transient error (workers.errors.TRANSIENT_ERRORS) stopped the batch; what it committed
    before stays. ``deliveries_to_return``: job items whose delivery was counted and whose outcome
    was not committed; the retry passes them back to :func:`run_batch`, which takes those
    deliveries back first: the worker did not die on those photos."""

    error: BaseException
    deliveries_to_return: tuple[int, ...]


@dataclass(frozen=True)
class _Batch:
    settings: Settings
    job_id: uuid.UUID
    pipeline: Models
    model_version: str
    media: MediaStore


@dataclass(frozen=True)
class _Started:
    items: tuple[PendingItem, ...]
    one_by_one: bool  # some were delivered before: run each alone, counted just before its turn
    counted: tuple[int, ...]  # job items whose delivery the start counted (all, when together)


def get_pipeline_for(settings: Settings) -> Models:
    from shared.ml.pipeline import get_pipeline

    return get_pipeline(settings)


def _start(batch: _Batch, job_item_ids: Sequence[int], to_return: Sequence[int]) -> _Started | None:
    """Load the batch's pending items and count their deliveries (unless they run one by one);
    None when the job is finished or gone."""
    with session_scope(batch.settings) as session:
        status = session.execute(
            text("SELECT status FROM jobs WHERE id = :id"), {"id": batch.job_id}
        ).scalar_one_or_none()
        if status is None or status in FINISHED_JOB_STATUSES:
            log.info(
                "batch for a finished or unknown job",
                extra={"job_id": str(batch.job_id), "status": status},
            )
            return None
        if to_return:
            return_deliveries(session, batch.job_id, to_return)
        items = tuple(load_pending(session, batch.job_id, job_item_ids, batch.model_version))
        mark_running(session, batch.job_id)
        one_by_one = any(item.deliveries for item in items)
        if one_by_one:
            return _Started(items, one_by_one=True, counted=())
        counted = count_deliveries(session, batch.job_id, [i.job_item_id for i in items])
    return _Started(items, one_by_one=False, counted=tuple(sorted(counted)))


def _run_together(batch: _Batch, items: Sequence[PendingItem]) -> Tally:
    """Fetch, embed and commit ``items`` as one model run and one transaction."""
    settled: list[tuple[PendingItem, Outcome]] = []
    todo: list[tuple[PendingItem, StoredPhoto]] = []
    for item in items:
        photo = read_photo(batch.settings, batch.media, item)
        if isinstance(photo, Failed):
            settled.append((item, photo))
        elif is_unchanged(item, photo):
            settled.append((item, Skipped(photo)))
        else:
            todo.append((item, photo))
    embedded = embed(batch.settings, batch.media, batch.pipeline, todo)
    settled.extend((item, outcome) for (item, _), outcome in zip(todo, embedded, strict=True))
    settled.sort(key=lambda pair: pair[0].position)
    with session_scope(batch.settings) as session:
        return commit_outcomes(session, batch.job_id, settled, batch.model_version)


def _deliver_alone(batch: _Batch, item: PendingItem) -> Tally | None:
    """Count this delivery of ``item``. The tally when that settles it (done meanwhile, or given
    up after too many deliveries that never finished); None when it is to be run now."""
    limit = max(2, batch.settings.item_max_deliveries)
    with session_scope(batch.settings) as session:
        deliveries = count_deliveries(session, batch.job_id, [item.job_item_id])
        if item.job_item_id not in deliveries:
            return Tally(already_done=1)
        delivered = deliveries[item.job_item_id]
        if delivered <= limit:
            return None
        crashed = Failed(
            "worker_crashed",
            f"the worker crashed on this photo: {delivered - 1} deliveries of it never"
            " finished, so it is not tried again",
        )
        return commit_outcomes(session, batch.job_id, [(item, crashed)], batch.model_version)


def run_batch(
    settings: Settings,
    job_id: uuid.UUID,
    job_item_ids: Sequence[int],
    pipeline: Models | None = None,
    *,
    deliveries_to_return: Sequence[int] = (),
) -> BatchReport | BatchInterrupted:
    """Process one batch of a job's items; safe to run again (does only what is still pending).

    ``deliveries_to_return``: :attr:`BatchInterrupted.deliveries_to_return` of the interrupted
    run this one retries.
    """
    pipeline = pipeline or get_pipeline_for(settings)
    batch = _Batch(
        settings, job_id, pipeline, pipeline.model_version, MediaStore(settings.media_root)
    )
    report = BatchReport(job_id=str(job_id))
    extra = {"job_id": str(job_id), "batch_size": len(job_item_ids)}
    uncommitted = tuple(deliveries_to_return)
    try:
        started = _start(batch, job_item_ids, uncommitted)
        if started is None:
            return report
        uncommitted = started.counted
        log.info(
            "batch started",
            extra={**extra, "pending": len(started.items), "one_by_one": started.one_by_one},
        )
        if started.one_by_one:
            for item in started.items:
                uncommitted = ()  # every earlier item's outcome is committed
                settled = _deliver_alone(batch, item)
                if settled is None:
                    uncommitted = (item.job_item_id,)
                    settled = _run_together(batch, [item])
                report.add(settled)
        else:
            report.add(_run_together(batch, started.items))
        uncommitted = ()
        with session_scope(settings) as session:
            after_batch(
                settings, session, batch.model_version, reason=f"ingest batch of job {job_id}"
            )
    except TRANSIENT_ERRORS as exc:
        return BatchInterrupted(exc, uncommitted)
    _log_committed(report, extra)
    return report


def _log_committed(report: BatchReport, extra: dict[str, object]) -> None:
    log.info(
        "batch committed",
        extra={
            **extra,
            "succeeded": report.succeeded,
            "failed": report.failed,
            "skipped": report.skipped,
            "already_done": report.already_done,
            "superseded": report.superseded,
            "job_status": report.status,
        },
    )
