"""Small synthetic fashion datasets, drawn with PIL, for tests, smoke training and the demo.

Usage::

    python -m training.synthetic deepfashion2 --out DIR [--count N] [--size PX] [--seed S]
    python -m training.synthetic deepfashion  --out DIR [--count N] [--size PX] [--seed S]
    python -m training.synthetic inshop       --out DIR [--count ITEMS] [--size PX] [--seed S]
    python -m training.synthetic catalogue    --out DIR [--count N] [--size PX] [--seed S]

Every image shows garment-like shapes on a light background: tops (a torso with short or long
sleeves, a vest, a sling top; outerwear is drawn open at the front, as two panels), dresses (a
top flaring into a skirt) and bottoms (trousers with two legs, shorts, a skirt trapezoid), each
in one colour with a solid, striped or dotted pattern. The shapes follow DeepFashion2's 13
categories, so a detector trained on them learns the same label space as on the real data.

Output is a function of (seed, index) alone: the same arguments write the same bytes, and the
functions below return the same objects.

Layouts written (the real datasets' layouts, so the training code reads either):

* ``deepfashion2``: ``image/000001.jpg`` and ``annos/000001.json`` with ``source``, ``pair_id``
  and ``item1``, ``item2``... Boxes are tight around the drawn polygons. Landmarks have the
  right count for the category (25, 33, 31, 39, 15, 15, 10, 14, 8, 29, 37, 19, 19 points) but
  are points spaced evenly along the garment's outline, not DeepFashion2's landmark semantics;
  about 1 in 10 is marked occluded (v=1) and 1 in 20 absent (0, 0, 0).
* ``deepfashion`` (Category and Attribute Prediction benchmark): ``img/<folder>/img_00000001.jpg``,
  ``Anno/list_category_img.txt``, ``Anno/list_bbox.txt``, ``Anno/list_category_cloth.txt``
  (the real 50 category names and types) and ``Eval/list_eval_partition.txt``. In the real data
  categories 38, 45, 49 and 50 have no images and 46 are used; here images use labels 1..46, so
  ``label - 1`` indexes the article's 46-way head directly. Each label is drawn as the closest of
  the 13 shapes (so Blazer and Jacket look alike), sometimes with a second garment beside it.
* ``inshop`` (In-shop Clothes Retrieval benchmark): ``img/<GROUP>/<Category>/id_00000001/
  01_1_front.jpg`` and ``Eval/list_eval_partition.txt`` (image_name item_id evaluation_status).
  Each item is one garment (shape, colour, pattern) photographed 2-4 times, shifted and scaled.
  Half the items are ``train``; of each other item the first image is ``query``, the rest
  ``gallery``. ``--count`` is the number of items. ``Anno/list_bbox_inshop.txt`` gives each
  photo's garment box (clothes_type 1 upper, 2 lower, 3 full; pose_type 1).
* ``catalogue``: product photos ``<SKU>.jpg`` and ``labels.json`` mapping each SKU to
  ``{"top": {"category", "colour", "pattern"} | null, "bottom": {...} | null}`` with DeepFashion2
  category names (a dress is the top; a dress photo has no bottom). Photos come in styles of
  three colour variants (same garments and placement, other colours); ``attributes.json`` maps
  each SKU to ``{"style", "colour", "in_stock", "price"}`` for ingestion as item attributes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from shared.vocabulary import CATEGORY_NAMES, VectorKind
from training.deepfashion2_to_coco import LANDMARK_COUNTS

RGB = tuple[int, int, int]
Point = tuple[float, float]

# Saturated or dark colours only: they must stand out from the light background.
PALETTE: dict[str, RGB] = {
    "red": (200, 30, 40),
    "orange": (235, 120, 20),
    "yellow": (220, 180, 20),
    "green": (40, 140, 60),
    "teal": (20, 140, 140),
    "blue": (40, 90, 200),
    "navy": (25, 35, 90),
    "purple": (120, 50, 150),
    "pink": (230, 110, 160),
    "brown": (120, 70, 35),
    "black": (25, 25, 25),
    "grey": (120, 120, 125),
}
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots")

TOP_CATEGORIES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
BOTTOM_CATEGORIES: tuple[int, ...] = (7, 8, 9)
DRESS_CATEGORIES: tuple[int, ...] = (10, 11, 12, 13)

# Left halves of the outlines in a unit box, from the centre of the neckline round the left
# side to the centre of the hem; the right half is the mirror image.
_TOP_HALVES: dict[str, list[Point]] = {
    "short_sleeve": [
        (0.5, 0.10),
        (0.38, 0.0),
        (0.22, 0.04),
        (0.0, 0.32),
        (0.12, 0.41),
        (0.22, 0.30),
        (0.22, 1.0),
        (0.5, 1.0),
    ],
    "long_sleeve": [
        (0.5, 0.10),
        (0.38, 0.0),
        (0.22, 0.04),
        (0.0, 0.92),
        (0.11, 0.95),
        (0.22, 0.30),
        (0.22, 1.0),
        (0.5, 1.0),
    ],
    "vest": [
        (0.5, 0.18),
        (0.38, 0.0),
        (0.28, 0.0),
        (0.26, 0.22),
        (0.15, 0.32),
        (0.15, 1.0),
        (0.5, 1.0),
    ],
    "sling": [
        (0.5, 0.30),
        (0.36, 0.27),
        (0.31, 0.0),
        (0.28, 0.0),
        (0.28, 0.28),
        (0.15, 0.34),
        (0.15, 1.0),
        (0.5, 1.0),
    ],
}
_BOTTOM_HALVES: dict[int, list[Point]] = {
    7: [(0.5, 0.0), (0.06, 0.0), (0.0, 1.0), (0.42, 1.0), (0.5, 0.62)],  # shorts
    8: [(0.5, 0.0), (0.08, 0.0), (0.0, 1.0), (0.24, 1.0), (0.5, 0.22)],  # trousers
    9: [(0.5, 0.0), (0.2, 0.0), (0.0, 1.0), (0.5, 1.0)],  # skirt
}
# category -> (top outline, open front)
_TOP_SHAPES: dict[int, tuple[str, bool]] = {
    1: ("short_sleeve", False),
    2: ("long_sleeve", False),
    3: ("short_sleeve", True),
    4: ("long_sleeve", True),
    5: ("vest", False),
    6: ("sling", False),
    10: ("short_sleeve", False),
    11: ("long_sleeve", False),
    12: ("vest", False),
    13: ("sling", False),
}
_DRESS_WAIST = 0.42
_OPEN_FRONT_GAP = 0.03

# The DeepFashion Category and Attribute Prediction list: (name, type 1 upper/2 lower/3 full).
DEEPFASHION_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("Anorak", 1),
    ("Blazer", 1),
    ("Blouse", 1),
    ("Bomber", 1),
    ("Button-Down", 1),
    ("Cardigan", 1),
    ("Flannel", 1),
    ("Halter", 1),
    ("Henley", 1),
    ("Hoodie", 1),
    ("Jacket", 1),
    ("Jersey", 1),
    ("Parka", 1),
    ("Peacoat", 1),
    ("Poncho", 1),
    ("Sweater", 1),
    ("Tank", 1),
    ("Tee", 1),
    ("Top", 1),
    ("Turtleneck", 1),
    ("Capris", 2),
    ("Chinos", 2),
    ("Culottes", 2),
    ("Cutoffs", 2),
    ("Gauchos", 2),
    ("Jeans", 2),
    ("Jeggings", 2),
    ("Jodhpurs", 2),
    ("Joggers", 2),
    ("Leggings", 2),
    ("Sarong", 2),
    ("Shorts", 2),
    ("Skirt", 2),
    ("Sweatpants", 2),
    ("Sweatshorts", 2),
    ("Trunks", 2),
    ("Caftan", 3),
    ("Cape", 3),
    ("Coat", 3),
    ("Coverup", 3),
    ("Dress", 3),
    ("Jumpsuit", 3),
    ("Kaftan", 3),
    ("Kimono", 3),
    ("Nightdress", 3),
    ("Onesie", 3),
    ("Robe", 3),
    ("Romper", 3),
    ("Shirtdress", 3),
    ("Sundress", 3),
)
DEEPFASHION_LABELS: tuple[int, ...] = tuple(range(1, 47))
# DeepFashion label -> the DeepFashion2 shape that stands in for it.
_DEEPFASHION_SHAPES: dict[int, int] = {
    1: 4,
    2: 4,
    3: 2,
    4: 4,
    5: 2,
    6: 4,
    7: 2,
    8: 6,
    9: 2,
    10: 2,
    11: 4,
    12: 1,
    13: 4,
    14: 4,
    15: 3,
    16: 2,
    17: 5,
    18: 1,
    19: 6,
    20: 2,
    21: 8,
    22: 8,
    23: 7,
    24: 7,
    25: 8,
    26: 8,
    27: 8,
    28: 8,
    29: 8,
    30: 8,
    31: 9,
    32: 7,
    33: 9,
    34: 8,
    35: 7,
    36: 7,
    37: 11,
    38: 3,
    39: 4,
    40: 12,
    41: 10,
    42: 11,
    43: 11,
    44: 4,
    45: 13,
    46: 11,
}
_INSHOP_CATEGORIES: dict[int, str] = {
    1: "Tees_Tanks",
    2: "Shirts_Polos",
    3: "Jackets_Vests",
    4: "Jackets_Coats",
    5: "Tees_Tanks",
    6: "Blouses_Shirts",
    7: "Shorts",
    8: "Pants",
    9: "Skirts",
    10: "Dresses",
    11: "Dresses",
    12: "Dresses",
    13: "Dresses",
}
_INSHOP_VIEWS: tuple[str, ...] = ("front", "side", "back", "full", "additional")


@dataclass(frozen=True)
class GarmentSpec:
    """What a garment looks like: DeepFashion2 category (its shape), colour and pattern."""

    category_id: int
    colour: str
    pattern: str
    accent: str

    @property
    def category_name(self) -> str:
        return CATEGORY_NAMES[self.category_id - 1]


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class DrawnGarment:
    """A garment placed on an image: its polygons (flat x,y lists) and tight box."""

    spec: GarmentSpec
    polygons: tuple[tuple[int, ...], ...]
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2, inclusive pixel bounds


def sample_rng(kind: str, seed: int, index: int) -> random.Random:
    """Each sample gets its own stream, so samples do not depend on one another."""
    # String seeds are hashed with SHA-512 by random, so this is stable across processes.
    return random.Random(f"{kind}:{seed}:{index}")  # noqa: S311 (reproducible data, no secret)


# ---------------------------------------------------------------- geometry


def _mirror(points: Sequence[Point]) -> list[Point]:
    return [(1.0 - x, y) for x, y in points]


def _closed_outline(half: Sequence[Point]) -> list[Point]:
    # half starts and ends on the centre line; the mirror's copies of those points are dropped.
    return list(half) + list(reversed(_mirror(half)))[1:-1]


def _dress_half(half: Sequence[Point]) -> list[Point]:
    bodice = [(x, y * _DRESS_WAIST) for x, y in half[:-2]]
    side_x = half[-2][0]
    return [*bodice, (side_x, _DRESS_WAIST), (0.04, 1.0), (0.5, 1.0)]


def unit_polygons(category_id: int) -> list[list[Point]]:
    """The garment's outline polygons in a unit box, for a DeepFashion2 category."""
    if category_id in _BOTTOM_HALVES:
        return [_closed_outline(_BOTTOM_HALVES[category_id])]
    if category_id not in _TOP_SHAPES:
        raise ValueError(f"unknown DeepFashion2 category {category_id}")
    outline, open_front = _TOP_SHAPES[category_id]
    half = _TOP_HALVES[outline]
    if category_id in DRESS_CATEGORIES:
        half = _dress_half(half)
    if not open_front:
        return [_closed_outline(half)]
    centre = 0.5 - _OPEN_FRONT_GAP
    left = [(centre if x == 0.5 else x, y) for x, y in half]
    return [left, list(reversed(_mirror(left)))]


def place(category_id: int, rect: Rect) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Polygons in pixels (flat x,y lists) and their tight box for a garment in ``rect``."""
    polygons = []
    xs: list[int] = []
    ys: list[int] = []
    for unit in unit_polygons(category_id):
        flat: list[int] = []
        for ux, uy in unit:
            px, py = round(rect.x + ux * rect.w), round(rect.y + uy * rect.h)
            flat += [px, py]
            xs.append(px)
            ys.append(py)
        polygons.append(tuple(flat))
    return tuple(polygons), (min(xs), min(ys), max(xs), max(ys))


def outline_landmarks(
    polygons: Sequence[Sequence[int]], count: int, rng: random.Random
) -> list[int]:
    """``count`` x,y,v triples spaced evenly along the polygons' outlines."""
    segments = []
    for flat in polygons:
        points = list(zip(flat[0::2], flat[1::2], strict=True))
        for start, end in zip(points, points[1:] + points[:1], strict=True):
            length = ((end[0] - start[0]) ** 2 + (end[1] - start[1]) ** 2) ** 0.5
            segments.append((start, end, length))
    perimeter = sum(length for _, _, length in segments) or 1.0
    landmarks: list[int] = []
    for k in range(count):
        x, y = _point_along(segments, perimeter * k / count)
        roll = rng.random()
        if roll < 0.05:
            landmarks += [0, 0, 0]  # DeepFashion2 writes absent landmarks as 0, 0, 0
        else:
            landmarks += [round(x), round(y), 1 if roll < 0.15 else 2]
    return landmarks


def _point_along(
    segments: Sequence[tuple[tuple[int, int], tuple[int, int], float]], distance: float
) -> Point:
    for start, end, length in segments:
        if distance <= length and length > 0:
            t = distance / length
            return start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])
        distance -= length
    return segments[-1][1]


# ---------------------------------------------------------------- drawing


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(max(0, min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def _pattern_layer(size: tuple[int, int], spec: GarmentSpec, box: Sequence[int]) -> Image.Image:
    layer = Image.new("RGB", size, PALETTE[spec.colour])
    if spec.pattern == "solid":
        return layer
    draw = ImageDraw.Draw(layer)
    accent = PALETTE[spec.accent]
    x1, y1, x2, y2 = box
    step = max(6, (y2 - y1) // 8)
    if spec.pattern == "stripes":
        for y in range(y1, y2 + 1, step):
            draw.rectangle((x1, y, x2, y + step // 2 - 1), fill=accent)
    elif spec.pattern == "dots":
        radius = max(1, step // 4)
        for row, y in enumerate(range(y1 + step // 2, y2 + 1, step)):
            offset = step // 2 if row % 2 else 0
            for x in range(x1 + offset, x2 + 1, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=accent)
    return layer


def draw_garment(canvas: Image.Image, spec: GarmentSpec, rect: Rect) -> DrawnGarment:
    """Draw one garment onto ``canvas`` (in place) and say where it went."""
    polygons, bbox = place(spec.category_id, rect)
    mask = Image.new("L", canvas.size, 0)
    mask_draw = ImageDraw.Draw(mask)
    for flat in polygons:
        mask_draw.polygon(list(flat), fill=255)
    canvas.paste(_pattern_layer(canvas.size, spec, bbox), (0, 0), mask)
    edge = _shade(PALETTE[spec.colour], 0.6)
    draw = ImageDraw.Draw(canvas)
    for flat in polygons:
        draw.polygon(list(flat), outline=edge)
    return DrawnGarment(spec=spec, polygons=polygons, bbox=bbox)  # type: ignore[arg-type]


def random_spec(rng: random.Random, category_id: int, avoid: str | None = None) -> GarmentSpec:
    colours = [c for c in PALETTE if c != avoid]
    colour = rng.choice(colours)
    pattern = rng.choice(PATTERNS)
    accent = rng.choice([c for c in PALETTE if c != colour])
    return GarmentSpec(category_id=category_id, colour=colour, pattern=pattern, accent=accent)


def background(rng: random.Random, size: int) -> Image.Image:
    shade = rng.randint(228, 250)
    tint = rng.randint(-6, 6)
    return Image.new("RGB", (size, size), (shade, shade - abs(tint), shade + tint))


# ---------------------------------------------------------------- outfits


def _fit(rng: random.Random, size: int, w: float, h: float, y: float) -> Rect:
    """A rect of the given size, horizontally jittered, kept inside the image margins."""
    margin = 0.03 * size
    w, h = min(w, size - 2 * margin), min(h, size - 2 * margin)
    x = size / 2 - w / 2 + rng.uniform(-0.08, 0.08) * size
    x = min(max(x, margin), size - margin - w)
    y = min(max(y, margin), size - margin - h)
    return Rect(x, y, w, h)


def _bottom_height(category_id: int, available: float, rng: random.Random) -> float:
    share = {7: (0.35, 0.5), 8: (0.85, 1.0), 9: (0.45, 0.8)}[category_id]
    return available * rng.uniform(*share)


def plan_outfit(
    rng: random.Random, size: int, weights: Sequence[float] = (5, 2, 2, 1)
) -> list[tuple[GarmentSpec, Rect]]:
    """Garments to draw, in drawing order (bottom before top, as a top hangs over the waist).

    ``weights``: how often a top + bottom, a top alone, a dress, a bottom alone.
    """
    kind = rng.choices(("top_bottom", "top", "dress", "bottom"), weights=weights)[0]
    margin = 0.03 * size
    if kind == "dress":
        spec = random_spec(rng, rng.choice(DRESS_CATEGORIES))
        h = rng.uniform(0.75, 0.9) * size
        return [(spec, _fit(rng, size, rng.uniform(0.55, 0.75) * size, h, (size - h) / 2))]
    if kind == "top":
        spec = random_spec(rng, rng.choice(TOP_CATEGORIES))
        h = rng.uniform(0.55, 0.8) * size
        return [(spec, _fit(rng, size, rng.uniform(0.6, 0.85) * size, h, (size - h) / 2))]
    if kind == "bottom":
        spec = random_spec(rng, rng.choice(BOTTOM_CATEGORIES))
        h = _bottom_height(spec.category_id, size - 2 * margin, rng)
        y = (size - h) / 2
        return [(spec, _fit(rng, size, rng.uniform(0.45, 0.65) * size, h, y))]
    top = random_spec(rng, rng.choice(TOP_CATEGORIES))
    bottom = random_spec(rng, rng.choice(BOTTOM_CATEGORIES), avoid=top.colour)
    top_rect = _fit(
        rng,
        size,
        rng.uniform(0.48, 0.66) * size,
        rng.uniform(0.32, 0.42) * size,
        rng.uniform(0.04, 0.08) * size,
    )
    bottom_y = top_rect.y + 0.9 * top_rect.h
    bottom_h = _bottom_height(bottom.category_id, size - margin - bottom_y, rng)
    bottom_rect = _fit(rng, size, top_rect.w * rng.uniform(0.55, 0.75), bottom_h, bottom_y)
    return [(bottom, bottom_rect), (top, top_rect)]


def render(
    rng: random.Random, size: int, plan: Sequence[tuple[GarmentSpec, Rect]]
) -> tuple[Image.Image, list[DrawnGarment]]:
    canvas = background(rng, size)
    return canvas, [draw_garment(canvas, spec, rect) for spec, rect in plan]


def _save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


# ---------------------------------------------------------------- DeepFashion2


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _df2_item(
    garment: DrawnGarment, drawn: Sequence[DrawnGarment], size: int, style: int, rng: random.Random
) -> dict[str, Any]:
    x1, y1, x2, y2 = garment.bbox
    share = (x2 - x1) * (y2 - y1) / (size * size)
    later = drawn[drawn.index(garment) + 1 :]
    covered = any(_overlaps(garment.bbox, other.bbox) for other in later)
    count = LANDMARK_COUNTS[garment.spec.category_id - 1]
    return {
        "category_id": garment.spec.category_id,
        "category_name": garment.spec.category_name,
        "bounding_box": list(garment.bbox),
        "style": style,
        "segmentation": [list(flat) for flat in garment.polygons],
        "landmarks": outline_landmarks(garment.polygons, count, rng),
        "scale": 3 if share > 0.35 else 2 if share > 0.1 else 1,
        "occlusion": 2 if covered else 1,
        "zoom_in": 1,
        "viewpoint": 2,
    }


OUTFIT_WEIGHTS = (5, 2, 2, 1)  # top + bottom, top alone, dress, bottom alone


def make_deepfashion2_sample(
    seed: int,
    index: int,
    size: int = 256,
    outfit_weights: Sequence[float] = OUTFIT_WEIGHTS,
) -> tuple[Image.Image, dict[str, Any]]:
    """Image ``index`` (from 1) of a synthetic DeepFashion2 split and its annotation dict.

    ``outfit_weights``: how often each kind of photo is drawn (see :func:`plan_outfit`).
    """
    rng = sample_rng("deepfashion2", seed, index)
    image, drawn = render(rng, size, plan_outfit(rng, size, weights=outfit_weights))
    style = rng.choice((0, 1, 2))
    annotation: dict[str, Any] = {
        "source": rng.choice(("user", "shop")),
        # Consecutive images share a pair id, as user and shop photos of one product do.
        "pair_id": (index - 1) // 4 + 1,
    }
    for number, garment in enumerate(drawn, start=1):
        annotation[f"item{number}"] = _df2_item(garment, drawn, size, style, rng)
    return image, annotation


def write_deepfashion2(
    out_dir: Path | str,
    count: int,
    size: int = 256,
    seed: int = 0,
    outfit_weights: Sequence[float] = OUTFIT_WEIGHTS,
) -> list[Path]:
    """Write ``image/NNNNNN.jpg`` + ``annos/NNNNNN.json``; returns the annotation paths."""
    out = Path(out_dir)
    (out / "annos").mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(1, count + 1):
        image, annotation = make_deepfashion2_sample(seed, index, size, outfit_weights)
        stem = f"{index:06d}"
        _save_jpeg(image, out / "image" / f"{stem}.jpg")
        path = out / "annos" / f"{stem}.json"
        path.write_text(json.dumps(annotation), encoding="utf-8")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- DeepFashion (category)


@dataclass(frozen=True)
class DeepFashionRecord:
    image_name: str  # relative to the dataset root, e.g. img/Striped_Navy_Tee/img_00000001.jpg
    label: int  # 1..50, index into DEEPFASHION_CATEGORIES plus one
    bbox: tuple[int, int, int, int]
    partition: str  # train | val | test


def make_deepfashion_sample(
    seed: int,
    index: int,
    size: int = 256,
) -> tuple[Image.Image, int, GarmentSpec, tuple[int, ...]]:
    """Image ``index`` of a synthetic category split: (image, label, garment, its box)."""
    rng = sample_rng("deepfashion", seed, index)
    label = rng.choice(DEEPFASHION_LABELS)
    _name, kind = DEEPFASHION_CATEGORIES[label - 1]
    shape = _DEEPFASHION_SHAPES[label]
    spec = random_spec(rng, shape)
    plan = [(spec, _single_rect(rng, size, shape))]
    if kind != 3 and rng.random() < 0.5:
        # A second garment makes the box head's job real: find the labelled one.
        plan = _with_companion(rng, size, spec)
    image, drawn = render(rng, size, plan)
    main = next(d for d in drawn if d.spec is spec)
    return image, label, spec, main.bbox


def _single_rect(rng: random.Random, size: int, shape: int) -> Rect:
    if shape in BOTTOM_CATEGORIES:
        h = _bottom_height(shape, 0.94 * size, rng)
        return _fit(rng, size, rng.uniform(0.45, 0.65) * size, h, (size - h) / 2)
    if shape in DRESS_CATEGORIES:
        h = rng.uniform(0.75, 0.9) * size
        return _fit(rng, size, rng.uniform(0.55, 0.75) * size, h, (size - h) / 2)
    h = rng.uniform(0.55, 0.8) * size
    return _fit(rng, size, rng.uniform(0.6, 0.85) * size, h, (size - h) / 2)


def _with_companion(
    rng: random.Random, size: int, spec: GarmentSpec
) -> list[tuple[GarmentSpec, Rect]]:
    """``spec`` worn with a random other-half garment, top drawn last."""
    while True:
        plan = plan_outfit(rng, size, weights=(1, 0, 0, 0))
        (bottom, bottom_rect), (top, top_rect) = plan
        if spec.category_id in BOTTOM_CATEGORIES:
            if top.colour != spec.colour:
                return [(spec, _refit(spec, bottom_rect, size, rng)), (top, top_rect)]
        elif bottom.colour != spec.colour:
            return [(bottom, bottom_rect), (spec, top_rect)]


def _refit(spec: GarmentSpec, rect: Rect, size: int, rng: random.Random) -> Rect:
    # The planned bottom's height suits its own category, not necessarily this one.
    available = size * 0.97 - rect.y
    return Rect(rect.x, rect.y, rect.w, _bottom_height(spec.category_id, available, rng))


def _partitions(count: int, seed: int, shares: tuple[float, float]) -> list[str]:
    order = list(range(count))
    random.Random(f"partition:{seed}").shuffle(order)  # noqa: S311 (reproducible split)
    n_train, n_val = round(count * shares[0]), round(count * shares[1])
    names = ["train"] * count
    for rank, index in enumerate(order):
        if rank >= n_train + n_val:
            names[index] = "test"
        elif rank >= n_train:
            names[index] = "val"
    return names


def _write_table(path: Path, header: str, rows: Sequence[Sequence[Any]]) -> None:
    """DeepFashion's list format: row count, a header line, whitespace-separated rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width = max((len(str(row[0])) for row in rows), default=0) + 2
    lines = [str(len(rows)), header]
    lines += [str(row[0]).ljust(width) + "  ".join(str(v) for v in row[1:]) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_deepfashion(
    out_dir: Path | str, count: int, size: int = 256, seed: int = 0
) -> list[DeepFashionRecord]:
    """Write the Category and Attribute Prediction layout; returns one record per image."""
    out = Path(out_dir)
    partitions = _partitions(count, seed, (0.7, 0.15))
    per_folder: dict[str, int] = {}
    records = []
    for index in range(1, count + 1):
        image, label, spec, bbox = make_deepfashion_sample(seed, index, size)
        folder = (
            f"{spec.pattern.capitalize()}_{spec.colour.capitalize()}_"
            f"{DEEPFASHION_CATEGORIES[label - 1][0]}"
        )
        per_folder[folder] = per_folder.get(folder, 0) + 1
        name = f"img/{folder}/img_{per_folder[folder]:08d}.jpg"
        _save_jpeg(image, out / name)
        records.append(DeepFashionRecord(name, label, bbox, partitions[index - 1]))
    _write_table(
        out / "Anno" / "list_category_img.txt",
        "image_name  category_label",
        [(r.image_name, r.label) for r in records],
    )
    _write_table(
        out / "Anno" / "list_bbox.txt",
        "image_name  x_1  y_1  x_2  y_2",
        [(r.image_name, *r.bbox) for r in records],
    )
    _write_table(
        out / "Anno" / "list_category_cloth.txt",
        "category_name  category_type",
        DEEPFASHION_CATEGORIES,
    )
    _write_table(
        out / "Eval" / "list_eval_partition.txt",
        "image_name  evaluation_status",
        [(r.image_name, r.partition) for r in records],
    )
    return records


# ---------------------------------------------------------------- In-shop retrieval


@dataclass(frozen=True)
class InShopRecord:
    image_name: str
    item_id: str
    partition: str  # train | query | gallery
    spec: GarmentSpec


def make_inshop_item(
    seed: int, item: int, size: int = 256
) -> tuple[GarmentSpec, str, list[Image.Image]]:
    """One retrieval item: its garment, a group folder and 2-4 photos of it."""
    spec, group, shots = make_inshop_shots(seed, item, size)
    return spec, group, [image for image, _ in shots]


def make_inshop_shots(
    seed: int,
    item: int,
    size: int = 256,
) -> tuple[GarmentSpec, str, list[tuple[Image.Image, tuple[int, ...]]]]:
    """Like :func:`make_inshop_item`, each photo with its garment's box."""
    rng = sample_rng("inshop", seed, item)
    category = rng.choice(TOP_CATEGORIES + BOTTOM_CATEGORIES + DRESS_CATEGORIES)
    spec = random_spec(rng, category)
    group = rng.choice(("MEN", "WOMEN")) if category not in DRESS_CATEGORIES else "WOMEN"
    base = _single_rect(rng, size, category)
    shots = []
    for _ in range(rng.randint(2, 4)):
        scale = rng.uniform(0.85, 1.1)
        w, h = base.w * scale, base.h * scale
        rect = _fit(rng, size, w, h, base.y + (base.h - h) / 2 + rng.uniform(-0.05, 0.05) * size)
        image, drawn = render(rng, size, [(spec, rect)])
        shots.append((image, drawn[0].bbox))
    return spec, group, shots


def _clothes_type(category_id: int) -> int:
    if category_id in BOTTOM_CATEGORIES:
        return 2
    return 3 if category_id in DRESS_CATEGORIES else 1


def write_inshop(
    out_dir: Path | str, items: int, size: int = 256, seed: int = 0
) -> list[InShopRecord]:
    """Write the In-shop retrieval layout; returns one record per image."""
    out = Path(out_dir)
    split = _partitions(items, seed, (0.5, 0.0))  # "train" or "test" per item
    records = []
    boxes = []
    for item in range(1, items + 1):
        spec, group, shots = make_inshop_shots(seed, item, size)
        item_id = f"id_{item:08d}"
        folder = f"img/{group}/{_INSHOP_CATEGORIES[spec.category_id]}/{item_id}"
        for shot, (image, bbox) in enumerate(shots, start=1):
            name = f"{folder}/{shot:02d}_{shot}_{_INSHOP_VIEWS[(shot - 1) % 5]}.jpg"
            _save_jpeg(image, out / name)
            if split[item - 1] == "train":
                partition = "train"
            else:
                partition = "query" if shot == 1 else "gallery"
            records.append(InShopRecord(name, item_id, partition, spec))
            boxes.append((name, _clothes_type(spec.category_id), 1, *bbox))
    _write_table(
        out / "Eval" / "list_eval_partition.txt",
        "image_name  item_id  evaluation_status",
        [(r.image_name, r.item_id, r.partition) for r in records],
    )
    _write_table(
        out / "Anno" / "list_bbox_inshop.txt",
        "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2",
        boxes,
    )
    return records


# ---------------------------------------------------------------- catalogue


def _label(spec: GarmentSpec | None) -> dict[str, str] | None:
    if spec is None:
        return None
    return {"category": spec.category_name, "colour": spec.colour, "pattern": spec.pattern}


def make_catalogue_sample(
    seed: int, index: int, size: int = 384
) -> tuple[Image.Image, dict[str, Any]]:
    """One product photo and its labels ``{"top": ..., "bottom": ...}``."""
    rng = sample_rng("catalogue", seed, index)
    # Mostly outfits, so most products have both a top and a bottom to match on.
    plan = plan_outfit(rng, size, weights=(6, 1, 2, 1))
    image, _ = render(rng, size, plan)
    specs = [spec for spec, _ in plan]
    top = next((s for s in specs if s.category_id not in BOTTOM_CATEGORIES), None)
    bottom = next((s for s in specs if s.category_id in BOTTOM_CATEGORIES), None)
    return image, {VectorKind.TOP: _label(top), VectorKind.BOTTOM: _label(bottom)}


# A catalogue's style comes in this many colour variants: the same cut photographed in other
# colours, as a shop lists them (the product page's "one per style" collapses them).
VARIANTS_PER_STYLE = 3
ATTRIBUTES = "attributes.json"


def catalogue_style(index: int) -> tuple[int, int]:
    """(style number, variant number) of catalogue photo ``index`` (both from 1)."""
    return (index - 1) // VARIANTS_PER_STYLE + 1, (index - 1) % VARIANTS_PER_STYLE + 1


def _recolour(
    rng: random.Random, plan: Sequence[tuple[GarmentSpec, Rect]]
) -> list[tuple[GarmentSpec, Rect]]:
    """The same garments in new colours (each other than its old one and than the others')."""
    taken: set[str] = set()
    out = []
    for spec, rect in plan:
        colour = rng.choice([c for c in PALETTE if c != spec.colour and c not in taken])
        taken.add(colour)
        accent = rng.choice([c for c in PALETTE if c != colour])
        out.append((dataclasses.replace(spec, colour=colour, accent=accent), rect))
    return out


def make_catalogue_photo(
    seed: int, index: int, size: int = 384
) -> tuple[Image.Image, dict[str, Any]]:
    """Catalogue photo ``index`` and its labels: its style's first variant is that style's
    :func:`make_catalogue_sample`; the others recolour its garments on a background of their own."""
    style, variant = catalogue_style(index)
    if variant == 1:
        return make_catalogue_sample(seed, style, size)
    rng = sample_rng("catalogue", seed, style)
    plan = _recolour(
        sample_rng("catalogue-variant", seed, index), plan_outfit(rng, size, weights=(6, 1, 2, 1))
    )
    image, _ = render(sample_rng("catalogue-background", seed, index), size, plan)
    specs = [spec for spec, _ in plan]
    top = next((s for s in specs if s.category_id not in BOTTOM_CATEGORIES), None)
    bottom = next((s for s in specs if s.category_id in BOTTOM_CATEGORIES), None)
    return image, {"top": _label(top), "bottom": _label(bottom)}


def catalogue_attributes(seed: int, index: int, label: dict[str, Any]) -> dict[str, Any]:
    """What a shop would say of photo ``index``: its style (shared by its colour variants), its
    main colour, whether it is in stock (about 3 in 4 are) and a price (per style, variants
    within a few percent of one another)."""
    style, _ = catalogue_style(index)
    base = sample_rng("catalogue-price", seed, style).uniform(15.0, 120.0)
    rng = sample_rng("catalogue-attributes", seed, index)
    main = label["top"] or label["bottom"]
    return {
        "style": f"ST{style:04d}",
        "colour": main["colour"] if main else None,
        "in_stock": rng.random() < 0.75,
        "price": round(base * rng.uniform(0.95, 1.05), 2),
    }


def make_catalogue(
    out_dir: Path | str, count: int = 24, seed: int = 0, size: int = 384
) -> dict[str, dict[str, Any]]:
    """Write ``<SKU>.jpg`` product photos, ``labels.json`` (what each shows) and
    ``attributes.json`` (what a shop says of each); returns the labels by SKU."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = {}
    attributes = {}
    for index in range(1, count + 1):
        sku = f"SKU{index:05d}"
        image, label = make_catalogue_photo(seed, index, size)
        _save_jpeg(image, out / f"{sku}.jpg")
        labels[sku] = label
        attributes[sku] = catalogue_attributes(seed, index, label)
    (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    (out / ATTRIBUTES).write_text(json.dumps(attributes, indent=2) + "\n", encoding="utf-8")
    return labels


# ---------------------------------------------------------------- CLI

_DEFAULTS = {  # command -> (count, size)
    "deepfashion2": (64, 256),
    "deepfashion": (128, 256),
    "inshop": (20, 256),
    "catalogue": (24, 384),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description="Write small synthetic fashion datasets."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "deepfashion2": "DeepFashion2 layout (image/, annos/)",
        "deepfashion": "DeepFashion Category and Attribute Prediction layout",
        "inshop": "DeepFashion In-shop Clothes Retrieval layout (--count is items)",
        "catalogue": "product photos <SKU>.jpg + labels.json for the demo",
    }
    for name, (count, size) in _DEFAULTS.items():
        sub = commands.add_parser(name, help=helps[name])
        sub.add_argument("--out", required=True, type=Path, help="folder to write")
        sub.add_argument("--count", type=int, default=count, help=f"default {count}")
        sub.add_argument("--size", type=int, default=size, help=f"image side, default {size}")
        sub.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 64:
        parser.error("--count must be at least 1 and --size at least 64")
    if args.command == "deepfashion2":
        written = len(write_deepfashion2(args.out, args.count, args.size, args.seed))
    elif args.command == "deepfashion":
        written = len(write_deepfashion(args.out, args.count, args.size, args.seed))
    elif args.command == "inshop":
        written = len(write_inshop(args.out, args.count, args.size, args.seed))
    else:
        written = len(make_catalogue(args.out, args.count, args.seed, args.size))
    print(f"wrote {written} images to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
