"""What a batch works on: each pending job item as loaded (never changed), and how it ended.

A batch loads one :class:`PendingItem` per job item still ``pending``; each stage returns what
it found instead of writing it onto the item: the bytes (:class:`StoredPhoto`), then one
:class:`Outcome` per item, which workers.ingestion.results commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from shared.models import Embedding, Item, JobItem
from shared.vocabulary import ItemStatus, JobItemStatus, VectorKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.ml.pipeline import ImageResult


@dataclass(frozen=True)
class PendingItem:
    """One pending job item and its catalogue item as they were when the batch loaded them."""

    job_item_id: int
    position: int
    sku: str
    item_id: int | None  # None: the item was deleted
    media_key: str | None
    source_url: str | None
    source_path: str | None
    item_status: str | None
    item_sha: str | None
    has_current_vectors: bool  # a whole-photo vector of the batch's model version exists
    deliveries: int  # deliveries of this job item to the models so far (job_items.deliveries)


@dataclass(frozen=True)
class StoredPhoto:
    """The bytes the item's source gave, already stored in the media store under ``key``."""

    data: bytes
    key: str
    sha256: str


@dataclass(frozen=True)
class Failed:
    """The item fails with a stable ``reason`` and a ``message`` for people; ``photo`` is the
    bytes that were fetched before it failed (stored on the item), if any."""

    reason: str
    message: str
    photo: StoredPhoto | None = None


@dataclass(frozen=True)
class Skipped:
    """The same photo is already embedded by this model version: nothing to do."""

    photo: StoredPhoto


@dataclass(frozen=True)
class Embedded:
    """The models' result for the photo, and the media key of each stored crop by kind."""

    photo: StoredPhoto
    result: ImageResult
    crop_keys: Mapping[str, str]


Outcome = Failed | Skipped | Embedded


def is_unchanged(item: PendingItem, photo: StoredPhoto) -> bool:
    """True when ``photo`` is the item's embedded photo and this model version's vectors exist."""
    return (
        item.item_status == ItemStatus.READY
        and photo.sha256 == item.item_sha
        and item.has_current_vectors
    )


def load_pending(
    session: Session, job_id: uuid.UUID, job_item_ids: Sequence[int], model_version: str
) -> list[PendingItem]:
    """The job's items among ``job_item_ids`` still pending, in job order."""
    current = (
        select(func.count())
        .select_from(Embedding)
        .where(
            Embedding.item_id == Item.id,
            Embedding.kind == VectorKind.FULL,
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
                JobItem.status == JobItemStatus.PENDING,
            )
            .order_by(JobItem.position)
        )
        .tuples()
        .all()
    )
    return [
        PendingItem(
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
            deliveries=job_item.deliveries,
        )
        for job_item, item, n_current in rows
    ]
