"""Writing a batch's outcomes: one transaction per commit, safe to run twice.

Vectors are upserted on (item, kind, model_version), each job item leaves ``pending`` at most
once, and the job's counters are recounted under the job row's lock (shared.ingest_state). A
redelivered or duplicated batch finds its items done and changes nothing; an item re-submitted
(new upload, URL or path) while its old photo was in the models keeps the newer one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import rowcount, session_scope
from shared.ingest_state import lock_job, refresh_job
from shared.models import Embedding, Item, JobItem
from shared.vectors import encode
from shared.vocabulary import ItemStatus, JobItemStatus
from workers.ingestion.work import Embedded, Failed, Outcome, PendingItem, Skipped
from workers.versions.keeping import drop_replaced_vectors, on_batch_commit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.config import Settings

log = logging.getLogger(__name__)

_REASON_MAX = 64
_DELETED_MEANWHILE = Failed("item_deleted", "the item was deleted meanwhile")


@dataclass
class Tally:
    """What one commit did, item by item (``reasons``: the failure reason by SKU); ``status``:
    the job's status after it, None when nothing was committed."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    superseded: int = 0
    status: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


def _lock_live_items(session: Session, item_ids: list[int]) -> set[int]:
    # Items before job items: the same order as a DELETE of an item (which cascades into
    # job_items), so the two never deadlock; rows missing here were deleted meanwhile. Every
    # item row this commit updates is locked here (FOR NO KEY UPDATE), up front, in the
    # canonical order job creation uses (SKU in the "C" collation): a batch and a new job
    # naming the same items in another order queue behind each other instead of deadlocking.
    return set(
        session.scalars(
            select(Item.id)
            .where(Item.id.in_(item_ids))
            .order_by(Item.sku.collate("C"))
            .with_for_update(key_share=True)
        )
    )


def _lock_still_pending(session: Session, job_item_ids: list[int]) -> dict[int, int | None]:
    """Item id by job item id, for those job items still pending (now locked)."""
    rows = session.execute(
        select(JobItem.id, JobItem.item_id)
        .where(JobItem.id.in_(job_item_ids), JobItem.status == JobItemStatus.PENDING)
        .order_by(JobItem.id)
        .with_for_update()
    )
    return {row.id: row.item_id for row in rows}


def commit_outcomes(
    session: Session,
    job_id: uuid.UUID,
    outcomes: Sequence[tuple[PendingItem, Outcome]],
    model_version: str,
) -> Tally:
    """Record each still-pending item's outcome, then recount the job."""
    tally = Tally()
    if lock_job(session, job_id) is None:
        return tally
    live = _lock_live_items(session, [i.item_id for i, _ in outcomes if i.item_id is not None])
    still_pending = _lock_still_pending(session, [i.job_item_id for i, _ in outcomes])
    for item, outcome in outcomes:
        if item.job_item_id not in still_pending:
            tally.already_done += 1  # a duplicate delivery got here first
            continue
        item_id = still_pending[item.job_item_id]
        if item_id is None or item_id not in live:
            item_id, outcome = None, _DELETED_MEANWHILE
        _record(session, item, item_id, outcome, model_version, tally)
    session.execute(
        text("UPDATE jobs SET model_version = :mv WHERE id = :id"),
        {"id": job_id, "mv": model_version},
    )
    on_batch_commit(session, model_version, embedded=tally.succeeded > 0)
    counts = refresh_job(session, job_id)
    tally.status = counts.status if counts else None
    return tally


def _record(
    session: Session,
    item: PendingItem,
    item_id: int | None,
    outcome: Outcome,
    model_version: str,
    tally: Tally,
) -> None:
    if isinstance(outcome, Failed):
        _record_failure(session, item, item_id, outcome)
        tally.failed += 1
        tally.reasons[item.sku] = outcome.reason
    elif isinstance(outcome, Skipped):
        _set_job_item(session, item, JobItemStatus.SUCCEEDED, skipped=True)
        tally.skipped += 1
    elif item_id is not None and _record_success(session, item, item_id, outcome, model_version):
        tally.succeeded += 1
    else:
        tally.superseded += 1


def _update_item_if_unchanged(
    session: Session, item: PendingItem, item_id: int, **values: Any
) -> bool:
    """Update the item unless it was re-submitted (new upload, URL or path) since we loaded it.

    The condition is part of the UPDATE, so a concurrent re-submission that commits first is
    seen (READ COMMITTED re-checks the row) and our older photo never overwrites the newer one.
    """
    result = session.execute(
        update(Item)
        .where(
            Item.id == item_id,
            Item.media_key.is_not_distinct_from(item.media_key),
            Item.source_url.is_not_distinct_from(item.source_url),
            Item.source_path.is_not_distinct_from(item.source_path),
        )
        .values(**values, updated_at=func.now())
        # A plain UPDATE: no session object mirrors these rows.
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))


def _set_job_item(
    session: Session,
    item: PendingItem,
    status: JobItemStatus,
    reason: str | None = None,
    *,
    error: str | None = None,
    skipped: bool = False,
) -> None:
    session.execute(
        text(
            "UPDATE job_items SET status = :status, reason = :reason, error = :error,"
            " skipped = :skipped, updated_at = now() WHERE id = :id"
        ),
        {
            "id": item.job_item_id,
            "status": status,
            "reason": reason[:_REASON_MAX] if reason else None,
            "error": error,
            "skipped": skipped,
        },
    )


def _record_failure(
    session: Session, item: PendingItem, item_id: int | None, failed: Failed
) -> None:
    _set_job_item(session, item, JobItemStatus.FAILED, failed.reason, error=failed.message)
    if item_id is None:
        return
    values: dict[str, Any] = {
        "status": ItemStatus.FAILED,
        "error": f"{failed.reason}: {failed.message}",
    }
    if failed.photo is not None:
        photo = failed.photo
        values.update(media_key=photo.key, image_sha256=photo.sha256, byte_size=len(photo.data))
    if _update_item_if_unchanged(session, item, item_id, **values):
        # The item's latest image failed: its old vectors no longer describe it.
        session.execute(text("DELETE FROM embeddings WHERE item_id = :id"), {"id": item_id})


def _embedding_rows(item_id: int, embedded: Embedded, model_version: str) -> list[dict[str, Any]]:
    result = embedded.result
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
                "crop_key": embedded.crop_keys.get(kind) if crop is not None else None,
            }
        )
    return rows


def _upsert_vectors(
    session: Session,
    item_id: int,
    rows: list[dict[str, Any]],
    model_version: str,
    *,
    photo_changed: bool,
) -> None:
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
        session, item_id, model_version, [r["kind"] for r in rows], photo_changed=photo_changed
    )


def _record_success(
    session: Session, item: PendingItem, item_id: int, embedded: Embedded, model_version: str
) -> bool:
    """False when the item was re-submitted meanwhile: the newer job will embed it."""
    photo, result = embedded.photo, embedded.result
    current = _update_item_if_unchanged(
        session,
        item,
        item_id,
        status=ItemStatus.READY,
        error=None,
        media_key=photo.key,
        image_sha256=photo.sha256,
        byte_size=len(photo.data),
        width=result.width,
        height=result.height,
    )
    if not current:
        _set_job_item(session, item, JobItemStatus.SUCCEEDED, "superseded")
        return False
    _upsert_vectors(
        session,
        item_id,
        _embedding_rows(item_id, embedded, model_version),
        model_version,
        photo_changed=item.item_status != ItemStatus.READY or item.item_sha != photo.sha256,
    )
    _set_job_item(session, item, JobItemStatus.SUCCEEDED)
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
                    "UPDATE job_items SET status = :failed, reason = 'internal_error',"
                    " error = :message, updated_at = now()"
                    " WHERE job_id = :job AND id = ANY(:ids) AND status = :pending"
                ),
                {
                    "job": job_id,
                    "ids": list(job_item_ids),
                    "message": message,
                    "failed": JobItemStatus.FAILED,
                    "pending": JobItemStatus.PENDING,
                },
            )
            refresh_job(session, job_id)
    except Exception:
        log.exception("could not record the batch failure", extra={"job_id": str(job_id)})
