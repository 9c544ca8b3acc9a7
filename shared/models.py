"""SQLAlchemy 2 typed models. The schema itself is made only by Alembic migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.vocabulary import ItemStatus, JobItemStatus, JobStatus, VectorKind

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: Iterable[str]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Item(TimestampMixin, Base):
    """One catalogue product, identified by the client's SKU."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint(_in("status", ItemStatus), name="status"),
        # Selective filters' equality conditions, as containment (migration 0007).
        Index(
            "ix_items_attributes",
            "attributes",
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(255), unique=True)
    # Indexed: media retention asks which stored files a row still references.
    media_key: Mapped[str | None] = mapped_column(String(255), index=True)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    source_url: Mapped[str | None] = mapped_column(Text)
    source_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16), default=ItemStatus.PENDING, server_default=ItemStatus.PENDING
    )
    error: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")

    embeddings: Mapped[list[Embedding]] = relationship(
        back_populates="item", cascade="all, delete-orphan", passive_deletes=True
    )


class Embedding(TimestampMixin, Base):
    """One vector of one item: the whole photo, its top crop or its bottom crop."""

    __tablename__ = "embeddings"
    __table_args__ = (
        UniqueConstraint("item_id", "kind", "model_version"),
        CheckConstraint(_in("kind", VectorKind), name="kind"),
        CheckConstraint("octet_length(vector) = dim * 4", name="vector_length"),
        Index("ix_embeddings_model_version_kind_item_id", "model_version", "kind", "item_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    model_version: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    # Little-endian float32, ``dim`` of them (shared.vectors is the codec).
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    box: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    label: Mapped[int | None] = mapped_column(SmallInteger)
    score: Mapped[float | None] = mapped_column(Float)
    # Media key of a small JPEG of the garment this top/bottom vector was embedded from (the box
    # cut out of the photo); None for whole-photo vectors. Indexed for media retention.
    crop_key: Mapped[str | None] = mapped_column(String(255), index=True)

    item: Mapped[Item] = relationship(back_populates="embeddings")


class Job(TimestampMixin, Base):
    """An ingestion job: a set of items to fetch, detect, crop and embed."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JobStatus), name="status"),
        # The stalled-work sweeper's scan: only unfinished jobs, by their last progress.
        Index(
            "ix_jobs_active_updated_at",
            "updated_at",
            postgresql_where=text(_in("status", (JobStatus.QUEUED, JobStatus.RUNNING))),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(
        String(16), default=JobStatus.QUEUED, server_default=JobStatus.QUEUED
    )
    source: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    model_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Times the sweeper re-enqueued the job since it last made progress (workers.maintenance).
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    items: Mapped[list[JobItem]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


class JobItem(TimestampMixin, Base):
    """One item's outcome within one job."""

    __tablename__ = "job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "position"),
        CheckConstraint(_in("status", JobItemStatus), name="status"),
        Index("ix_job_items_job_id_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # SET NULL: deleting an item must not rewrite a job's history.
    item_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", ondelete="SET NULL"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(
        String(16), default=JobItemStatus.PENDING, server_default=JobItemStatus.PENDING
    )
    # Stable machine-readable reason (undecodable, too_large, fetch_failed...), then detail.
    reason: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # True when the item's image and model version were unchanged and no model work was done.
    skipped: Mapped[bool] = mapped_column(default=False, server_default="false")
    # Deliveries of this item to a worker that began its work; one that never ended (the worker
    # died on the photo) leaves it counted, so a photo that kills workers is given up on.
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    job: Mapped[Job] = relationship(back_populates="items")


class NeighbourList(Base):
    """One item's nearest other items of one kind, kept exact by the workers (workers.search).

    ``neighbour_ids`` holds little-endian int64 item ids and ``sq_distances`` little-endian
    float64 squared Euclidean distances, nearest first, ties by item id (shared.search.lists is
    the codec). ``complete`` is true when the list holds every other item of its kind.
    """

    __tablename__ = "neighbour_lists"
    __table_args__ = (
        CheckConstraint("octet_length(neighbour_ids) = octet_length(sq_distances)", name="lengths"),
        # A worker a few folds behind reads only the lists written since (workers.search.fold).
        Index("ix_neighbour_lists_fold", "model_version", "kind", "fold_id"),
    )

    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    # No foreign key: a fold writes from a snapshot in which the item may have just been
    # deleted; the deletion is in the change log and the next fold removes the list.
    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    neighbour_ids: Mapped[bytes] = mapped_column(LargeBinary)
    sq_distances: Mapped[bytes] = mapped_column(LargeBinary)
    complete: Mapped[bool] = mapped_column(Boolean)
    fold_id: Mapped[int] = mapped_column(BigInteger)


class ListFold(Base):
    """One pass of list maintenance: the changes it folded into the neighbour lists."""

    __tablename__ = "list_folds"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    changes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lists_written: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    seconds: Mapped[float | None] = mapped_column(Float)


class ListChange(Base):
    """An embedding inserted, rewritten or deleted since the lists last took it into account.

    Written only by triggers on ``embeddings`` (migration 0002), so no code path can change a
    vector without the lists hearing of it. ``fold_id`` is set by the fold that took it in; a
    reader adds every change its copy of the lists has not seen (docs/architecture.md).
    """

    __tablename__ = "list_changes"
    __table_args__ = (Index("ix_list_changes_fold_id", "fold_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    item_id: Mapped[int] = mapped_column(BigInteger)
    fold_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ListState(Base):
    """Singleton: the newest fold whose change rows were purged (older syncs must reload)."""

    __tablename__ = "list_state"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    purged_through: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ModelVersion(Base):
    """A model version some worker was started with (docs/architecture.md#model-versions).

    ``tracked_at``: since when every ingested item reaches this version too (a build was asked
    for, or it served); ``retired_at``: an operator retired it, ``purged_at``: its vectors,
    lists, changes and cache keys are gone.
    """

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    bundle_path: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str | None] = mapped_column(String(16))
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    # The version-changing settings and bundle parts it was derived from (what makes it differ).
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    tracked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ModelServing(Base):
    """Singleton: the version product pages, photo search and the UI answer with. Switching is
    one UPDATE of this row, so exactly one version serves at any instant."""

    __tablename__ = "model_serving"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    switched_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
