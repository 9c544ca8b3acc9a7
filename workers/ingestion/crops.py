"""Garment crops as images: the box a top/bottom vector was embedded from, kept as a small JPEG.

A crop is cut from the photo as decoded for the models (shared.images.decode_rgb: EXIF
orientation applied, so boxes and pixels agree), with the same pixel rule the embedder's crop
uses (shared.ml.preprocess.crop), shrunk so that its long side is at most ``CROP_MAX_SIDE``
(never enlarged, aspect ratio kept) and stored content-addressed in the media store. Ingestion
and the backfill of older items (workers.maintenance.backfill_crops) both call this module, so
the same photo and box always give the same bytes and the same key.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from shared.ml.preprocess import crop

if TYPE_CHECKING:
    from shared.media import MediaStore

# Small files for result grids; 85 shows no blocking at thumbnail sizes.
JPEG_QUALITY = 85

K = TypeVar("K")


def crop_jpeg(rgb: np.ndarray, box: Sequence[float], max_side: int) -> bytes:
    """The pixels under ``box`` (x1, y1, x2, y2 in ``rgb``'s pixels) as JPEG bytes."""
    picture = Image.fromarray(np.ascontiguousarray(crop(rgb, box)))
    side = max(1, max_side)
    if max(picture.size) > side:
        # thumbnail() keeps the aspect ratio and averages the pixels it drops (no aliasing).
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def store_crops(
    media: MediaStore, rgb: np.ndarray, boxes: Mapping[K, Sequence[float]], max_side: int
) -> dict[K, str]:
    """Each box's crop stored in ``media``: the media key under the box's own key."""
    return {name: media.put_bytes(crop_jpeg(rgb, box, max_side)).key for name, box in boxes.items()}
