"""Image geometry shared by the detector and the embedder: box clipping, crops, resize + pad."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# ResNet50's preprocess_input ('caffe' mode) subtracts this RGB mean, so padding with it becomes
# exact zeros at the network input: the pad carries no signal of its own.
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)

Box = tuple[float, float, float, float]


def clip_box(box: Sequence[float], width: int, height: int) -> Box | None:
    """``box`` (x1, y1, x2, y2) clipped to the image; None when nothing of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
    y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    return (x1, y1, x2, y2)


def crop(rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The pixels under ``box`` (already clipped); partial edge pixels are included."""
    height, width = rgb.shape[:2]
    x1, y1 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
    x2, y2 = min(math.ceil(box[2]), width), min(math.ceil(box[3]), height)
    return rgb[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]


def letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize to fit ``size`` x ``size`` keeping the aspect ratio, centred on a mean-colour pad.

    The article fed crops of any shape to the network; a fixed square input lets crops be
    batched, and keeping the aspect ratio keeps garment shape (a stretched trouser leg is
    another garment to the network).
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        # INTER_AREA averages when shrinking (no aliasing); linear when enlarging small crops.
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        rgb = cv2.resize(np.ascontiguousarray(rgb), (new_w, new_h), interpolation=interpolation)
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = np.round(IMAGENET_MEAN_RGB).astype(np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = rgb
    return canvas


def letterbox_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``(n, size, size, 3)`` float32 RGB pixels in 0..255, ready for ``preprocess_input``."""
    batch = np.empty((len(images), size, size, 3), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index] = letterbox(image, size)
    return batch
