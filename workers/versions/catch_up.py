"""A version catches up with the catalogue: every ready item it has no vectors of is embedded
from its stored photo, by a worker of that version, one chunk per task.

This is both the build of a new version (``POST /api/v1/models/<v>/build``) and how a tracked
version that is not the one ingesting a job keeps in step (workers.versions.keeping): the same
question ("which ready items lack my vectors?") answers both, so nothing can fall between them.

A pass walks the catalogue in item id order, ``ingest_batch_size`` items per task, each task
sending the next (``after_id``: the last id it looked at). An item its photo cannot be embedded
for in this version is left behind for this pass; the version then stays incomplete (and cannot
serve) and the item is tried again by the next pass. Commits are guarded: the vectors are
written only if the item is still ready with the photo they were computed from, and the
version is not retired (both rows locked FOR SHARE until the commit), so a re-photographed item
or a retire that lands meanwhile wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import session_scope
from shared.images import ImageRejected, decode_rgb
from shared.media import MediaStore
from shared.models import Embedding
from shared.vectors import encode
from shared.versions.registry import is_retired
from workers.ingestion.crops import store_crops

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.config import Settings
    from shared.ml.pipeline import ImageResult, Pipeline

log = logging.getLogger(__name__)


@dataclass
class _Photo:
    item_id: int
    sku: str
    sha: str | None
    media_key: str
    data: bytes | None = None
    result: ImageResult | None = None
    crop_keys: dict[str, str] = field(default_factory=dict)


@dataclass
class CatchUpReport:
    version: str
    looked_at: int = 0
    embedded: int = 0
    skipped: int = 0
    last_id: int = 0
    more: bool = False
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _missing(session: Session, version: str, after_id: int, limit: int) -> list[_Photo]:
    # OFFSET 0 keeps the NOT EXISTS a per-item index probe, walked in id order from after_id
    # until the chunk is full. Flattened into an anti join, the planner, whose statistics lag a
    # build's inserts, compared each item with a materialised scan of all of v's vectors: each
    # chunk cost grew with the part built (2 s a chunk at 5k items).
    rows = session.execute(
        text(
            "SELECT i.id, i.sku, i.image_sha256, i.media_key FROM items i"
            " WHERE i.status = 'ready' AND i.id > :after AND i.media_key IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.item_id = i.id"
            "   AND e.model_version = :v AND e.kind = 'full' OFFSET 0)"
            " ORDER BY i.id LIMIT :n"
        ),
        {"v": version, "after": after_id, "n": limit},
    ).all()
    return [_Photo(r.id, r.sku, r.image_sha256, r.media_key) for r in rows]


def _embed(settings: Settings, pipeline: Pipeline, photos: list[_Photo]) -> None:
    media = MediaStore(settings.media_root)
    for p in photos:
        try:
            p.data = media.read(p.media_key)
        except (KeyError, FileNotFoundError):
            log.warning("stored photo missing", extra={"sku": p.sku, "media_key": p.media_key})
    todo = [p for p in photos if p.data is not None]
    results = pipeline.process([p.data for p in todo if p.data is not None])
    for p, result in zip(todo, results, strict=True):
        if result.error is not None or "full" not in result.vectors:
            log.warning("photo not embedded in this version", extra={"sku": p.sku})
            continue
        p.result = result
        if result.crops and p.data is not None:
            try:
                rgb = decode_rgb(p.data, settings.max_image_pixels)
            except ImageRejected:
                continue
            boxes = {kind: crop.box for kind, crop in result.crops.items()}
            p.crop_keys = store_crops(media, rgb, boxes, settings.crop_max_side)


def _rows(p: _Photo, version: str) -> list[dict[str, Any]]:
    result = p.result
    if result is None:
        return []
    rows = []
    for kind, vector in result.vectors.items():
        crop = result.crops.get(kind)
        rows.append(
            {
                "item_id": p.item_id,
                "kind": kind,
                "model_version": version,
                "dim": len(vector),
                "vector": encode(vector),
                "box": [float(x) for x in crop.box] if crop is not None else None,
                "label": int(crop.label) if crop is not None else None,
                "score": float(crop.score) if crop is not None else None,
                "crop_key": p.crop_keys.get(kind) if crop is not None else None,
            }
        )
    return rows


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Every row in one statement: the change-log triggers are per statement."""
    statement = pg_insert(Embedding).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["item_id", "kind", "model_version"],
            set_={
                name: getattr(statement.excluded, name)
                for name in ("dim", "vector", "box", "label", "score", "crop_key")
            }
            | {"updated_at": func.now()},
        )
    )


def _commit(session: Session, version: str, photos: list[_Photo]) -> int:
    embedded = [p for p in photos if p.result is not None]
    if not embedded:
        return 0
    # Items first, in the canonical order batches lock them (SKU in the "C" collation).
    current = {
        r.id: r.image_sha256
        for r in session.execute(
            text(
                "SELECT id, image_sha256 FROM items WHERE id = ANY(:ids) AND status = 'ready'"
                ' ORDER BY sku COLLATE "C" FOR SHARE'
            ),
            {"ids": [p.item_id for p in embedded]},
        )
    }
    if is_retired(session, version, lock=True):
        return 0
    # Re-photographed or gone meanwhile: the newer photo's ingestion wins.
    kept = [p for p in embedded if p.item_id in current and current[p.item_id] == p.sha]
    rows = [row for p in kept for row in _rows(p, version)]
    if not rows:
        return 0
    _upsert(session, rows)
    # Kinds of this version the photo no longer has (a detector that now finds no top).
    session.execute(
        text(
            "DELETE FROM embeddings WHERE model_version = :v AND item_id = ANY(:ids)"
            " AND (item_id, kind) NOT IN"
            " (SELECT * FROM unnest(CAST(:row_ids AS bigint[]), CAST(:row_kinds AS text[])))"
        ),
        {
            "v": version,
            "ids": [p.item_id for p in kept],
            "row_ids": [r["item_id"] for r in rows],
            "row_kinds": [r["kind"] for r in rows],
        },
    )
    return len(kept)


def catch_up_chunk(
    settings: Settings, pipeline: Pipeline, version: str, after_id: int
) -> CatchUpReport:
    """One chunk of a pass; ``report.more``: the pass goes on after ``report.last_id``."""
    report = CatchUpReport(version=version, last_id=after_id)
    if pipeline.model_version != version:
        report.refused = "not_my_version"  # a worker embeds with its own bundle only
        return report
    limit = max(1, settings.ingest_batch_size)
    with session_scope(settings) as session:
        if is_retired(session, version):
            report.refused = "retired"
            return report
        photos = _missing(session, version, after_id, limit)
    report.looked_at = len(photos)
    if not photos:
        return report
    report.last_id = photos[-1].item_id
    report.more = len(photos) == limit
    _embed(settings, pipeline, photos)
    with session_scope(settings) as session:
        report.embedded = _commit(session, version, photos)
    report.skipped = report.looked_at - report.embedded
    return report
