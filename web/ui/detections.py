"""Garments detected on a photo, as the pages draw them: boxes over the photo (an SVG overlay)
and captions ("top: vest 0.87").

Geometry is in percent of the photo: the overlay is stretched over the photo by the
stylesheet, so boxes sit on the garments at whatever size the photo is drawn, with no inline
style (the Content-Security-Policy allows none) and no image work per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.vocabulary import CROP_KINDS, category_name

# A caption's line (12 px type and its outline) on the narrowest a photo is drawn (20rem, the
# search page's): where the photo has that much room outside a box, the caption goes there.
CAPTION_LINE_PX = 18
PHOTO_MIN_WIDTH_PX = 320


@dataclass(frozen=True)
class CaptionPlace:
    """Where a box's caption is drawn: SVG ``<text>`` attributes (x, y in percent of the
    photo; dx, dy in pixels or em, as SVG reads them)."""

    x: float
    y: float
    dx: str
    dy: str
    anchor: str  # text-anchor: "start" or "end"


@dataclass(frozen=True)
class Detection:
    """A garment the detector kept on a photo: the crop its ``kind`` vector came from."""

    kind: str  # "top" or "bottom"
    label: str  # DeepFashion2 category name
    score: float | None
    left: float  # x1 / width * 100
    top: float
    width: float  # (x2 - x1) / width * 100
    height: float

    @property
    def caption(self) -> str:
        score = "" if self.score is None else f" {self.score:.2f}"
        return f"{self.kind}: {self.label.replace('_', ' ')}{score}"

    @property
    def name(self) -> str:
        return self.label.replace("_", " ")

    def caption_place(self, photo_width: int | None, photo_height: int | None) -> CaptionPlace:
        """A top's caption above its box, a bottom's below it (a top and a bottom box often
        touch: their captions stay apart), inside the box where the photo ends too soon;
        from the box's side nearer the photo's middle, so a long caption stays on the photo."""
        aspect = (photo_height / photo_width) if photo_width and photo_height else 1.0
        line = 100 * CAPTION_LINE_PX / (PHOTO_MIN_WIDTH_PX * aspect)  # percent of the height
        if self.left + self.width / 2 <= 50:
            x, dx, anchor = self.left, "4", "start"
        else:
            x, dx, anchor = self.left + self.width, "-4", "end"
        bottom = self.top + self.height
        if self.kind == "bottom":
            y, dy = (bottom, "1.05em") if 100 - bottom >= line else (bottom, "-0.5em")
        else:
            y, dy = (self.top, "-0.4em") if self.top >= line else (self.top, "1.2em")
        return CaptionPlace(round(x, 3), round(y, 3), dx, dy, anchor)


def detection(
    kind: str,
    box: Sequence[float],
    label: int | None,
    score: float | None,
    width: int,
    height: int,
) -> Detection | None:
    """A box ``[x1, y1, x2, y2]`` in pixels of a ``width`` x ``height`` photo, clipped to it;
    None when nothing of it lies on the photo."""
    if width <= 0 or height <= 0 or len(box) < 4:
        return None
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
    )


def from_photo_search(query: Mapping[str, Any] | None) -> dict[str, Detection]:
    """The boxes a worker found on an uploaded photo (the search document's ``query``:
    ``crops`` by kind with ``box``, ``label`` and ``score``, and the photo's ``width`` and
    ``height``), by kind."""
    if not query:
        return {}
    width, height = query.get("width"), query.get("height")
    if not isinstance(width, int) or not isinstance(height, int):
        return {}
    found: dict[str, Detection] = {}
    for kind in CROP_KINDS:
        crop = (query.get("crops") or {}).get(kind)
        if not crop or not crop.get("box"):
            continue
        drawn = detection(kind, crop["box"], crop.get("label"), crop.get("score"), width, height)
        if drawn is not None:
            found[kind] = drawn
    return found
