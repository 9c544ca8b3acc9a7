"""What only the pages read from the database: the garments detected on an item's photo (and on
those of the items recommended with it), as boxes the browser draws (web.ui.detections). Items,
jobs and recommendations come from web.services, as the API's do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from shared.models import Embedding, Item
from shared.vocabulary import CROP_KINDS
from web.ui.detections import Detection, detection

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def detections(
    session: Session, skus: Sequence[str], model_version: str | None = None
) -> dict[str, dict[str, Detection]]:
    """``{sku: {kind: Detection}}`` from the stored top/bottom vectors' boxes.

    ``model_version``: the version the recommendations were ranked with; None takes, per item,
    the version of its newest vector (an item may still hold an earlier bundle's vectors).
    """
    if not skus:
        return {}
    query = (
        select(
            Item.sku,
            Item.width,
            Item.height,
            Embedding.kind,
            Embedding.box,
            Embedding.label,
            Embedding.score,
            Embedding.model_version,
        )
        .join(Embedding, Embedding.item_id == Item.id)
        .where(
            Item.sku.in_(list(skus)),
            Embedding.kind.in_(CROP_KINDS),
            Embedding.box.is_not(None),
            Item.width > 0,
            Item.height > 0,
        )
        .order_by(Item.sku, Embedding.id.desc())
    )
    if model_version is not None:
        query = query.where(Embedding.model_version == model_version)
    found: dict[str, dict[str, Detection]] = {}
    newest: dict[str, str] = {}
    for row in session.execute(query):
        sku, kind = row.sku, row.kind
        if newest.setdefault(sku, row.model_version) != row.model_version:
            continue
        if kind in found.get(sku, {}) or row.box is None:
            continue
        drawn = detection(kind, row.box, row.label, row.score, row.width, row.height)
        if drawn is not None:
            found.setdefault(sku, {})[kind] = drawn
    return found
