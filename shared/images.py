"""Safe image decoding: the only way untrusted bytes become pixels anywhere in the project.

Guards, in order: an empty payload, a format outside the allowed list, a header declaring more
pixels than ``max_pixels`` (decompression bombs: checked before any pixel is decoded), and a
truncated or corrupt file (Pillow must decode every pixel without its truncation tolerance).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
_FORMATS_IN_WORDS = "JPEG, PNG, WebP, BMP, GIF or TIFF"
DEFAULT_MAX_PIXELS = 40_000_000

# Never accept half an image: Pillow's default already refuses truncated files; make it explicit
# because some other library in the process may have flipped this global.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(ValueError):
    """An image we refuse; ``reason`` is a stable code (``undecodable``, ``too_large``).

    ``message`` is for the person who sent the file: it says what is wrong with it in words and
    never quotes Pillow's exceptions, which name Python objects and internal buffers.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read only the header: format and size, refusing what decode() would refuse by header."""
    if not data:
        raise ImageRejected("undecodable", "the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format or "", img.size
    except Image.DecompressionBombError:
        # Pillow's own (higher) limit trips while reading the header: same verdict as ours.
        raise ImageRejected(
            "too_large", f"the image exceeds the limit of {max_pixels} pixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            "undecodable", f"the file is not an image in a format we read ({_FORMATS_IN_WORDS})"
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise ImageRejected(
            "undecodable", "the file looks like an image but its header is damaged"
        ) from None
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected(
            "undecodable",
            f"images in {fmt or 'an unknown'} format are not accepted; send {_FORMATS_IN_WORDS}",
        )
    if width <= 0 or height <= 0:
        raise ImageRejected("undecodable", f"image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_large", f"image is {width}x{height} pixels; the limit is {max_pixels} pixels"
        )
    return ImageInfo(fmt, width, height)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to an RGB ``uint8`` array of shape (H, W, 3), EXIF orientation applied."""
    probe(data, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except Image.DecompressionBombError:
        raise ImageRejected(
            "too_large", f"the image exceeds the limit of {max_pixels} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        # Pillow raises OSError("image file is truncated ...") for a cut-off file.
        raise ImageRejected(
            "undecodable", "the image is cut short or damaged: its pixels cannot be decoded"
        ) from None
    return np.asarray(rgb, dtype=np.uint8)
