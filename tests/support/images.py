"""Image bytes for tests: real JPEGs from pixels or a seed, and a PNG that lies about its size."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """``rgb`` (H x W x 3, uint8) as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_bytes(seed: int, size: tuple[int, int] = (80, 96)) -> bytes:
    """A small, distinct, valid JPEG per seed; ``size`` is (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    return encode_jpeg(pixels, quality=85)


def solid_jpeg(
    width: int = 40, height: int = 30, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A JPEG of one colour."""
    return encode_jpeg(np.full((height, width, 3), color, dtype=np.uint8), quality=90)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` with a tiny body (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
