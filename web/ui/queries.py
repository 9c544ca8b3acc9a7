"""What only the pages read from the database: the garments detected on an item's photo (and on
those of the items recommended with it), as boxes the browser draws. Items, jobs and
recommendations come from web.services, as the API's do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from shared.models import Embedding, Item
from shared.vocabulary import CROP_KINDS, category_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Detection:
    """A garment the detector kept on an item's photo: the crop its ``kind`` vector came from.

    Geometry is in percent of the stored photo, so the browser draws boxes and crops with CSS
    on the original image: no image work per request.
    """

    kind: str  # "top" or "bottom"
    label: str  # DeepFashion2 category name
    score: float | None
    left: float  # x1 / width * 100
    top: float
    width: float  # (x2 - x1) / width * 100
    height: float
    aspect: float  # the crop's own width / height, in pixels

    @property
    def caption(self) -> str:
        score = "" if self.score is None else f" {self.score:.2f}"
        return f"{self.kind}: {self.label.replace('_', ' ')}{score}"

    @property
    def crop_style(self) -> str:
        """CSS for an ``<img>`` inside a box of this crop's aspect ratio, showing only the crop."""
        return (
            f"width:{100 * 100 / self.width:.3f}%;left:{-100 * self.left / self.width:.3f}%;"
            f"top:{-100 * self.top / self.height:.3f}%"
        )

    @property
    def box_style(self) -> str:
        return (
            f"left:{self.left:.3f}%;top:{self.top:.3f}%;width:{self.width:.3f}%;"
            f"height:{self.height:.3f}%"
        )


def _detection(
    kind: str, box: Sequence[float], label: int | None, score: float | None, width: int, height: int
) -> Detection | None:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    if x2 <= x1 or y2 <= y1:
        return None
    try:
        name = category_name(label) if label is not None else "garment"
    except ValueError:
        name = "garment"
    return Detection(
        kind,
        name,
        score,
        100 * x1 / width,
        100 * y1 / height,
        100 * (x2 - x1) / width,
        100 * (y2 - y1) / height,
        (x2 - x1) / (y2 - y1),
    )


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
        if kind in found.get(sku, {}) or row.box is None or len(row.box) < 4:
            continue
        detection = _detection(kind, row.box, row.label, row.score, row.width, row.height)
        if detection is not None:
            found.setdefault(sku, {})[kind] = detection
    return found
