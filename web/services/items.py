"""Catalogue items: one item with its vectors, the ready ones a page at a time, deleting one,
and the insert-or-update an ingestion job makes for each SKU it names."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, case, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import driver_rows
from shared.models import Embedding, Item
from shared.versions.routing import request_folds
from shared.vocabulary import ItemStatus, VectorKind, category_name
from web.links import media_url
from web.resources import db, db_reads, settings
from web.services.errors import NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.media import StoredMedia

log = logging.getLogger(__name__)

# An item's vectors are listed whole photo first, then its crops.
_KIND_ORDER: dict[str, int] = {kind: rank for rank, kind in enumerate(VectorKind)}


@dataclass(frozen=True)
class VectorInfo:
    """What is known about one stored vector, without the vector itself."""

    kind: str
    model_version: str
    dim: int
    box: list[float] | None
    label: int | None
    label_name: str | None
    score: float | None
    # The garment crop this top/bottom vector was embedded from; None for whole photos and for
    # crops not stored yet (workers.maintenance.backfill_crops makes them).
    crop_url: str | None


@dataclass(frozen=True)
class ItemDetail:
    item: Item
    vectors: list[VectorInfo]  # by kind (full, top, bottom), then model version

    @property
    def kinds(self) -> list[str]:
        """The kinds it has vectors of, each once, in the vectors' order."""
        return list(dict.fromkeys(v.kind for v in self.vectors))


def item_row(sku: str) -> Item | None:
    """The catalogue row of ``sku`` (shared.search.reader.find_item is what a search needs of it:
    its id, status, and the kinds of its current model version)."""
    return db().scalars(select(Item).where(Item.sku == sku)).one_or_none()


def _item_or_not_found(sku: str) -> Item:
    item = item_row(sku)
    if item is None:
        raise NotFound("item_not_found", f"No item has the SKU {sku!r}.")
    return item


def _label_name(label: int | None) -> str | None:
    if label is None:
        return None
    try:
        return category_name(label)
    except ValueError:
        return None


def item_detail(sku: str) -> ItemDetail:
    """The item and its vectors' kinds, boxes, labels and crops (NotFound for an unknown SKU)."""
    item = _item_or_not_found(sku)
    rows = db().scalars(select(Embedding).where(Embedding.item_id == item.id)).all()
    vectors = sorted(
        (
            VectorInfo(
                kind=e.kind,
                model_version=e.model_version,
                dim=e.dim,
                box=e.box,
                label=e.label,
                label_name=_label_name(e.label),
                score=e.score,
                crop_url=media_url(e.crop_key),
            )
            for e in rows
        ),
        key=lambda v: (_KIND_ORDER.get(v.kind, 9), v.model_version),
    )
    return ItemDetail(item, vectors)


_PUBLIC_ITEM_SQL = (
    "SELECT i.sku, i.status, i.media_key, i.width, i.height, i.attributes,"
    " ARRAY(SELECT DISTINCT e.kind FROM embeddings e WHERE e.item_id = i.id) AS kinds"
    " FROM items i WHERE i.sku = %(sku)s"
)


def public_item(sku: str) -> dict[str, Any]:
    """What anyone may read of an item (NotFound for an unknown SKU), in one statement.

    The same fields as the full document's public part, without loading the ORM row and its
    vectors' rows: a shop page asks for this on every view.
    """
    rows = driver_rows(db_reads(), _PUBLIC_ITEM_SQL, {"sku": sku})
    if not rows:
        raise NotFound("item_not_found", f"No item has the SKU {sku!r}.")
    row = rows[0]
    return {
        "sku": row.sku,
        "status": row.status,
        "image_url": media_url(row.media_key),
        "width": row.width,
        "height": row.height,
        "attributes": row.attributes or {},
        "kinds": sorted(row.kinds, key=lambda kind: _KIND_ORDER.get(kind, len(_KIND_ORDER))),
    }


def delete_item(sku: str) -> None:
    """Remove an item and its vectors (NotFound for an unknown SKU), then have the neighbour
    lists catch up."""
    session = db()
    session.delete(_item_or_not_found(sku))
    session.commit()
    log.info("item deleted", extra={"sku": sku})
    try:
        request_folds(settings(), session, reason=f"item {sku} deleted")
    except Exception:  # the delete stands and answers already skip it; a later fold tidies
        log.exception("could not schedule a fold of the neighbour lists", extra={"sku": sku})


@dataclass(frozen=True)
class ReadyPage:
    items: list[Item]
    page: int
    pages: int
    total: int


def ready_items_page(page: int, page_size: int) -> ReadyPage:
    """Ready items only (pending and failed ones have nothing to show), in SKU order; a page
    past the last gives the last."""
    session = db()
    total = session.scalar(
        select(func.count()).select_from(Item).where(Item.status == ItemStatus.READY)
    )
    total = int(total or 0)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    items = session.scalars(
        select(Item)
        .where(Item.status == ItemStatus.READY)
        .order_by(Item.sku)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return ReadyPage(list(items), page, pages, total)


def upsert_item(
    session: Session,
    sku: str,
    attributes: dict[str, Any] | None,
    stored: StoredMedia | None = None,
    url: str | None = None,
    path: str | None = None,
) -> int:
    """Insert or update the item an ingestion job names; its id.

    Its image is either ``stored`` (uploaded bytes, already in the media store) or behind
    ``url`` / ``path`` (fetched by a worker). ``attributes`` None keeps the item's current ones.
    """
    table = Item.__table__
    if not isinstance(table, Table):  # a declarative model maps one Table
        raise TypeError(f"{Item.__name__} is not mapped to a table")
    values: dict[str, Any] = {"sku": sku, "status": ItemStatus.PENDING, "error": None}
    if attributes is not None:
        values["attributes"] = attributes
    statement = pg_insert(table)
    current, incoming = table.c, statement.excluded
    updates: dict[str, Any] = {"updated_at": func.now()}
    if attributes is not None:
        updates["attributes"] = incoming.attributes
    ready = current.status == ItemStatus.READY
    if stored is not None:
        values.update(
            media_key=stored.key,
            image_sha256=stored.sha256,
            byte_size=stored.size,
            source_url=None,
            source_path=None,
        )
        same_image = ready & (current.image_sha256 == incoming.image_sha256)
        # The same photo of a ready item stays ready (the worker will skip it); a new photo
        # makes the item pending until it is embedded.
        updates.update(
            media_key=incoming.media_key,
            image_sha256=incoming.image_sha256,
            byte_size=incoming.byte_size,
            source_url=None,
            source_path=None,
            status=_ready_when(same_image),
            error=None,
        )
    else:
        values.update(source_url=url, source_path=path)
        # Bytes behind a URL or path are only known once fetched: the worker compares hashes.
        updates.update(
            source_url=incoming.source_url,
            source_path=incoming.source_path,
            status=_ready_when(ready),
            error=None,
        )
    upsert = (
        statement.values(**values)
        .on_conflict_do_update(index_elements=["sku"], set_=updates)
        .returning(table.c.id)
    )
    return int(session.execute(upsert).scalar_one())


def _ready_when(condition: Any) -> Any:
    """SQL: ``'ready'`` where ``condition`` holds, else ``'pending'``."""
    ready = case((condition, literal(ItemStatus.READY.value)), else_=None)
    return func.coalesce(ready, ItemStatus.PENDING.value)
