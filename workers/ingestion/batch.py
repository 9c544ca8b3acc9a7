"""One ingestion batch: fetch each item's bytes, run the model pipeline once, commit the outcome.

Everything here is safe to run twice. Work is loaded only for job items still ``pending``;
bytes are fetched outside any transaction; all outcomes are committed in one transaction in
which vectors are upserted on (item, kind, model_version), each job item leaves ``pending`` at
most once, and the job's counters are recounted under the job row's lock
(shared.ingest_state). A redelivered or duplicated batch finds its items done and changes
nothing. The Celery tasks that call this live in workers.tasks.ingest. The top and bottom crops
of embedded photos are stored as small JPEGs (workers.ingestion.crops) before that transaction,
as fetched bytes are, and their keys committed on the vectors' rows.

Every delivery of a photo to the models is counted (``job_items.attempts``) before the work and
committed, so a delivery that never ends (the worker was killed by a segfault or the OOM killer)
stays counted. The first delivery of a batch runs its photos together; a batch with photos that
were delivered before runs them one at a time, each counted just before its turn, so only the
photo that kills the worker accumulates deliveries and fails once it has had
``item_max_deliveries``; its neighbours complete.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared import task_names
from shared.db import rowcount, session_scope
from shared.images import decode_rgb
from shared.ingest_state import lock_for_dispatch, lock_job, mark_running, refresh_job
from shared.media import MediaStore
from shared.models import Embedding, Item, JobItem
from shared.queueing import task_sender
from shared.vectors import encode
from shared.versions.routing import ingest_queue
from shared.vocabulary import FINISHED_JOB_STATUSES
from workers.errors import TRANSIENT_ERRORS
from workers.ingestion.crops import store_crops
from workers.ingestion.errors import SourceError
from workers.ingestion.fetch import FetchPolicy, fetch_url
from workers.ingestion.paths import read_import_path
from workers.versions.keeping import after_batch, drop_replaced_vectors, on_batch_commit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.config import Settings
    from shared.ml.pipeline import ImageResult

log = logging.getLogger(__name__)

_REASON_MAX = 64


# --------------------------------------------------------------------------- start_job


def dispatch_job(settings: Settings, job_id: uuid.UUID) -> int:
    """Mark the job running and send one batch task per chunk of its pending items."""
    with session_scope(settings) as session:
        queue = ingest_queue(session)  # the serving version's workers (versions.routing)
        # Waits for the sender's commit: the web sends this task before committing the job.
        lock_for_dispatch(session, job_id)
        status = lock_job(session, job_id)
        if status is None or status in FINISHED_JOB_STATUSES:
            log.info("job not dispatched", extra={"job_id": str(job_id), "status": status})
            return 0
        mark_running(session, job_id)
        pending = list(
            session.scalars(
                select(JobItem.id)
                .where(JobItem.job_id == job_id, JobItem.status == "pending")
                .order_by(JobItem.position)
            )
        )
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


# --------------------------------------------------------------------------- process_batch


@dataclass
class _Work:
    job_item_id: int
    position: int
    sku: str
    item_id: int | None
    media_key: str | None
    source_url: str | None
    source_path: str | None
    item_status: str | None
    item_sha: str | None
    has_current_vectors: bool
    attempts: int = 0
    data: bytes | None = None
    stored_key: str | None = None
    stored_sha: str | None = None
    reason: str | None = None
    message: str | None = None
    skipped: bool = False
    result: ImageResult | None = None
    crop_keys: dict[str, str] = field(default_factory=dict)  # kind -> media key of its JPEG


@dataclass
class BatchReport:
    job_id: str
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    superseded: int = 0
    status: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


def _load_work(
    session: Session, job_id: uuid.UUID, job_item_ids: Sequence[int], model_version: str
) -> list[_Work]:
    current = (
        select(func.count())
        .select_from(Embedding)
        .where(
            Embedding.item_id == Item.id,
            Embedding.kind == "full",
            Embedding.model_version == model_version,
        )
        .correlate(Item)
        .scalar_subquery()
    )
    # Typed here: the outer join may give no item.
    rows: Sequence[tuple[JobItem, Item | None, int]] = (
        session.execute(
            select(JobItem, Item, current)
            .outerjoin(Item, JobItem.item_id == Item.id)
            .where(
                JobItem.job_id == job_id,
                JobItem.id.in_(list(job_item_ids)),
                JobItem.status == "pending",
            )
            .order_by(JobItem.position)
        )
        .tuples()
        .all()
    )
    work = []
    for job_item, item, n_current in rows:
        work.append(
            _Work(
                job_item_id=job_item.id,
                position=job_item.position,
                sku=job_item.sku,
                item_id=item.id if item else None,
                media_key=item.media_key if item else None,
                source_url=item.source_url if item else None,
                source_path=item.source_path if item else None,
                item_status=item.status if item else None,
                item_sha=item.image_sha256 if item else None,
                has_current_vectors=bool(n_current),
                attempts=job_item.attempts,
            )
        )
    return work


def _get_bytes(settings: Settings, media: MediaStore, work: _Work) -> None:
    """Fill ``work.data`` (and store fetched/imported bytes), or ``work.reason``."""
    try:
        if work.item_id is None:
            raise SourceError("item_deleted", "the item was deleted before it was processed")
        if work.source_url:
            policy = FetchPolicy(
                settings.fetch_timeout_s,
                settings.fetch_max_bytes,
                settings.fetch_allow_private,
                frozenset(settings.fetch_allowed_ports),
            )
            data = fetch_url(work.source_url, policy)
        elif work.source_path:
            data = read_import_path(
                settings.import_root, work.source_path, settings.max_upload_bytes
            )
        elif work.media_key:
            try:
                path = media.path_for(work.media_key)
                size = path.stat().st_size
            except (KeyError, FileNotFoundError):
                raise SourceError("media_missing", "the uploaded file is missing") from None
            if size > settings.max_upload_bytes:
                raise SourceError(
                    "too_large",
                    f"the file has {size} bytes; the limit is {settings.max_upload_bytes}",
                )
            data = path.read_bytes()
        else:
            raise SourceError("no_source", "the item has no image, URL or path")
        if len(data) > settings.max_upload_bytes:
            raise SourceError(
                "too_large",
                f"the file has {len(data)} bytes; the limit is {settings.max_upload_bytes}",
            )
        stored = media.put_bytes(data)
    except SourceError as exc:
        work.reason, work.message = exc.reason, exc.message
        return
    work.data, work.stored_key, work.stored_sha = data, stored.key, stored.sha256


class Models(Protocol):
    """What a batch needs of the model pipeline (shared.ml.pipeline.Pipeline)."""

    @property
    def model_version(self) -> str: ...

    def process(self, images: Sequence[bytes]) -> list[ImageResult]: ...


def _photo(w: _Work) -> bytes:
    if w.data is None:
        raise RuntimeError(f"job item {w.job_item_id} reached the models without its bytes")
    return w.data


def _run_models(pipeline: Models, todo: list[_Work]) -> None:
    if not todo:
        return
    try:
        results: list[ImageResult | Exception] = list(pipeline.process([_photo(w) for w in todo]))
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        # One poisoned photo must not fail its neighbours: retry one by one to isolate it.
        log.exception("batch inference failed; retrying photo by photo")
        results = []
        for w in todo:
            try:
                results.extend(pipeline.process([_photo(w)]))
            except Exception as exc:
                log.exception("photo failed in the model pipeline", extra={"sku": w.sku})
                results.append(exc)
    for w, result in zip(todo, results, strict=True):
        if isinstance(result, Exception):
            # The exception is in the log; the person reading the job gets words, not internals.
            w.reason = "processing_error"
            w.message = "the photo could not be processed because of an error on our side"
        elif result.error is not None:
            w.reason, w.message = result.error.reason, result.error.message
        elif "full" not in result.vectors:
            w.reason, w.message = "processing_error", "the pipeline returned no whole-photo vector"
        else:
            w.result = result


def _store_crops(settings: Settings, media: MediaStore, todo: list[_Work]) -> None:
    """Each embedded photo's garment crops, stored before the commit that names them (media
    retention's grace period covers the bytes until then)."""
    for w in todo:
        if w.result is None or not w.result.crops:
            continue
        # Decoded again rather than kept from the models: a batch holds no photo's pixels
        # across the models' work, and the backfill of older items cuts crops the same way.
        rgb = decode_rgb(_photo(w), settings.max_image_pixels)
        boxes = {kind: crop.box for kind, crop in w.result.crops.items()}
        w.crop_keys = store_crops(media, rgb, boxes, settings.crop_max_side)


def _embedding_rows(w: _Work, item_id: int, model_version: str) -> list[dict[str, Any]]:
    result = w.result
    if result is None:
        raise RuntimeError(f"job item {w.job_item_id} has no model result to store")
    rows = []
    for kind, vector in result.vectors.items():
        crop = result.crops.get(kind)
        rows.append(
            {
                "item_id": item_id,
                "kind": kind,
                "model_version": model_version,
                "dim": len(vector),
                "vector": encode(vector),
                "box": [float(v) for v in crop.box] if crop is not None else None,
                "label": int(crop.label) if crop is not None else None,
                "score": float(crop.score) if crop is not None else None,
                "crop_key": w.crop_keys.get(kind) if crop is not None else None,
            }
        )
    return rows


def _commit(
    session: Session, job_id: uuid.UUID, work: list[_Work], model_version: str, report: BatchReport
) -> None:
    if lock_job(session, job_id) is None:
        return
    item_ids = [w.item_id for w in work if w.item_id is not None]
    # Items before job items: the same order as a DELETE of an item (which cascades into
    # job_items), so the two never deadlock; rows missing here were deleted meanwhile. Every
    # item row this commit updates is locked here (FOR NO KEY UPDATE), up front, in the
    # canonical order job creation uses (SKU in the "C" collation): a batch and a new job
    # naming the same items in another order queue behind each other instead of deadlocking.
    live = set(
        session.scalars(
            select(Item.id)
            .where(Item.id.in_(item_ids))
            .order_by(Item.sku.collate("C"))
            .with_for_update(key_share=True)
        )
    )
    still_pending = {
        row.id: row.item_id
        for row in session.execute(
            select(JobItem.id, JobItem.item_id)
            .where(JobItem.id.in_([w.job_item_id for w in work]), JobItem.status == "pending")
            .order_by(JobItem.id)
            .with_for_update()
        )
    }
    for w in work:
        if w.job_item_id not in still_pending:
            report.already_done += 1  # a duplicate delivery got here first
            continue
        item_id = still_pending[w.job_item_id]
        if item_id is None or item_id not in live:
            w.reason, w.message, w.result = "item_deleted", "the item was deleted meanwhile", None
        if w.reason:
            _record_failure(session, w, item_id if item_id in live else None)
            report.failed += 1
            report.reasons[w.sku] = w.reason
        elif w.skipped:
            _set_job_item(session, w, "succeeded")
            report.skipped += 1
        elif _record_success(session, w, item_id, model_version):
            report.succeeded += 1
        else:
            report.superseded += 1
    session.execute(
        text("UPDATE jobs SET model_version = :mv WHERE id = :id"),
        {"id": job_id, "mv": model_version},
    )
    on_batch_commit(session, model_version, embedded=report.succeeded > 0)
    counts = refresh_job(session, job_id)
    report.status = counts.status if counts else None


def _update_item_if_unchanged(session: Session, w: _Work, item_id: int, **values: Any) -> bool:
    """Update the item unless it was re-submitted (new upload, URL or path) since we loaded it.

    The condition is part of the UPDATE, so a concurrent re-submission that commits first is
    seen (READ COMMITTED re-checks the row) and our older photo never overwrites the newer one.
    """
    result = session.execute(
        update(Item)
        .where(
            Item.id == item_id,
            Item.media_key.is_not_distinct_from(w.media_key),
            Item.source_url.is_not_distinct_from(w.source_url),
            Item.source_path.is_not_distinct_from(w.source_path),
        )
        .values(**values, updated_at=func.now())
        # A plain UPDATE: no session object mirrors these rows.
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))


def _set_job_item(session: Session, w: _Work, status: str, reason: str | None = None) -> None:
    session.execute(
        text(
            "UPDATE job_items SET status = :status, reason = :reason, error = :error,"
            " skipped = :skipped, updated_at = now() WHERE id = :id"
        ),
        {
            "id": w.job_item_id,
            "status": status,
            "reason": reason[:_REASON_MAX] if reason else None,
            "error": w.message if status == "failed" else None,
            "skipped": w.skipped and status == "succeeded",
        },
    )


def _record_failure(session: Session, w: _Work, item_id: int | None) -> None:
    _set_job_item(session, w, "failed", w.reason or "failed")
    if item_id is None:
        return
    values: dict[str, Any] = {"status": "failed", "error": f"{w.reason}: {w.message}"}
    if w.stored_key:
        values.update(
            media_key=w.stored_key, image_sha256=w.stored_sha, byte_size=len(w.data or b"")
        )
    if _update_item_if_unchanged(session, w, item_id, **values):
        # The item's latest image failed: its old vectors no longer describe it.
        session.execute(text("DELETE FROM embeddings WHERE item_id = :id"), {"id": item_id})


def _record_success(session: Session, w: _Work, item_id: int, model_version: str) -> bool:
    """False when the item was re-submitted meanwhile: the newer job will embed it."""
    result = w.result
    if result is None:
        raise RuntimeError(f"job item {w.job_item_id} succeeded without a model result")
    current = _update_item_if_unchanged(
        session,
        w,
        item_id,
        status="ready",
        error=None,
        media_key=w.stored_key,
        image_sha256=w.stored_sha,
        byte_size=len(w.data or b""),
        width=result.width,
        height=result.height,
    )
    if not current:
        _set_job_item(session, w, "succeeded", "superseded")
        return False
    rows = _embedding_rows(w, item_id, model_version)
    statement = pg_insert(Embedding).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["item_id", "kind", "model_version"],
            set_={
                "dim": statement.excluded.dim,
                "vector": statement.excluded.vector,
                "box": statement.excluded.box,
                "label": statement.excluded.label,
                "score": statement.excluded.score,
                "crop_key": statement.excluded.crop_key,
                "updated_at": func.now(),
            },
        )
    )
    # Vectors of an older image (a kind this photo no longer has) are replaced; other tracked
    # versions' vectors of the same photo stay (workers.versions.keeping).
    drop_replaced_vectors(
        session,
        item_id,
        model_version,
        [r["kind"] for r in rows],
        photo_changed=w.item_status != "ready" or w.item_sha != w.stored_sha,
    )
    _set_job_item(session, w, "succeeded")
    return True


def fail_pending(
    settings: Settings, job_id: uuid.UUID, job_item_ids: Sequence[int], message: str
) -> None:
    """Best effort after an unexpected error: the batch's items fail instead of staying pending
    forever (a failed task is acknowledged, so nothing would ever pick them up again)."""
    try:
        with session_scope(settings) as session:
            if lock_job(session, job_id) is None:
                return
            session.execute(
                text(
                    "UPDATE job_items SET status = 'failed', reason = 'internal_error',"
                    " error = :message, updated_at = now()"
                    " WHERE job_id = :job AND id = ANY(:ids) AND status = 'pending'"
                ),
                {"job": job_id, "ids": list(job_item_ids), "message": message},
            )
            refresh_job(session, job_id)
    except Exception:
        log.exception("could not record the batch failure", extra={"job_id": str(job_id)})


def get_pipeline_for(settings: Settings) -> Models:
    from shared.ml.pipeline import get_pipeline

    return get_pipeline(settings)


def _count_deliveries(session: Session, job_id: uuid.UUID, work: Sequence[_Work]) -> set[int]:
    """Count one delivery of each still-pending job item; the ids counted."""
    lock_job(session, job_id)
    rows = session.execute(
        text(
            "UPDATE job_items SET attempts = attempts + 1, updated_at = now()"
            " WHERE job_id = :job AND id = ANY(:ids) AND status = 'pending'"
            " RETURNING id, attempts"
        ),
        {"job": job_id, "ids": [w.job_item_id for w in work]},
    ).all()
    attempts: dict[int, int] = dict(rows)
    for w in work:
        w.attempts = attempts.get(w.job_item_id, w.attempts)
    return set(attempts)


def _uncount(session: Session, job_id: uuid.UUID, job_item_ids: Sequence[int]) -> None:
    lock_job(session, job_id)
    session.execute(
        text(
            "UPDATE job_items SET attempts = attempts - 1"
            " WHERE job_id = :job AND id = ANY(:ids) AND status = 'pending' AND attempts > 0"
        ),
        {"job": job_id, "ids": list(job_item_ids)},
    )


def _run_together(
    settings: Settings,
    media: MediaStore,
    pipeline: Models,
    job_id: uuid.UUID,
    work: list[_Work],
    model_version: str,
    report: BatchReport,
) -> None:
    for w in work:
        _get_bytes(settings, media, w)
        w.skipped = (
            w.reason is None
            and w.item_status == "ready"
            and w.stored_sha == w.item_sha
            and w.has_current_vectors
        )
    todo = [w for w in work if w.reason is None and not w.skipped]
    _run_models(pipeline, todo)
    _store_crops(settings, media, todo)
    with session_scope(settings) as session:
        _commit(session, job_id, work, model_version, report)


def _run_alone(
    settings: Settings,
    media: MediaStore,
    pipeline: Models,
    job_id: uuid.UUID,
    w: _Work,
    model_version: str,
    report: BatchReport,
    counted: list[int],
) -> None:
    limit = max(2, settings.item_max_deliveries)
    with session_scope(settings) as session:
        if not _count_deliveries(session, job_id, [w]):
            report.already_done += 1
            return
        if w.attempts > limit:
            w.reason = "worker_crashed"
            w.message = (
                f"the worker crashed on this photo: {w.attempts - 1} deliveries of it never"
                " finished, so it is not tried again"
            )
            _commit(session, job_id, [w], model_version, report)
            return
    counted.append(w.job_item_id)
    _run_together(settings, media, pipeline, job_id, [w], model_version, report)
    counted.remove(w.job_item_id)


def run_batch(
    settings: Settings,
    job_id: uuid.UUID,
    job_item_ids: Sequence[int],
    pipeline: Models | None = None,
    *,
    counted: list[int] | None = None,
) -> BatchReport:
    """Process one batch of a job's items; safe to run again (does only what is still pending).

    ``counted``: job items whose delivery was counted and whose outcome is not committed yet. A
    caller that catches a transient error passes the list, as this call left it, to the retry,
    which takes those counts back first: the worker did not die on those photos.
    """
    counted = [] if counted is None else counted
    report = BatchReport(job_id=str(job_id))
    extra = {"job_id": str(job_id), "batch_size": len(job_item_ids)}
    pipeline = pipeline or get_pipeline_for(settings)
    model_version = pipeline.model_version
    with session_scope(settings) as session:
        status = session.execute(
            text("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one_or_none()
        if status is None or status in FINISHED_JOB_STATUSES:
            log.info("batch for a finished or unknown job", extra={**extra, "status": status})
            return report
        if counted:
            _uncount(session, job_id, counted)
        work = _load_work(session, job_id, job_item_ids, model_version)
        mark_running(session, job_id)
        one_by_one = any(w.attempts for w in work)
        fresh = set() if one_by_one else _count_deliveries(session, job_id, work)
    counted[:] = sorted(fresh)
    log.info("batch started", extra={**extra, "pending": len(work), "one_by_one": one_by_one})
    media = MediaStore(settings.media_root)
    if one_by_one:
        for w in work:
            _run_alone(settings, media, pipeline, job_id, w, model_version, report, counted)
    else:
        _run_together(settings, media, pipeline, job_id, work, model_version, report)
        counted.clear()
    with session_scope(settings) as session:
        after_batch(settings, session, model_version, reason=f"ingest batch of job {job_id}")
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
    return report
