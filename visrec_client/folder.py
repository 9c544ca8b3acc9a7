"""What a bulk ingest sends: the image files in a folder, in upload-sized chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class FolderError(Exception):
    """The folder cannot be ingested as it is (missing, empty, or two files for one SKU)."""


def find_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files under ``folder``, sorted; each one's SKU is its name without extension.

    Two files with one stem would silently overwrite each other's item, so that is an error.
    """
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder")
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    files = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    by_sku: dict[str, Path] = {}
    for path in files:
        if path.stem in by_sku:
            raise FolderError(f"two files give the SKU {path.stem!r}: {by_sku[path.stem]}, {path}")
        by_sku[path.stem] = path
    if not files:
        raise FolderError(f"no image files in {folder}")
    return files


def chunked(files: Sequence[Path], max_files: int, max_bytes: int) -> Iterator[list[Path]]:
    """Consecutive chunks of at most ``max_files`` files and ``max_bytes`` bytes.

    A file larger than ``max_bytes`` on its own still goes, alone in its chunk: the server's
    per-file cap (MAX_UPLOAD_BYTES) is what judges it.
    """
    chunk: list[Path] = []
    size = 0
    for path in files:
        length = path.stat().st_size
        if chunk and (len(chunk) >= max_files or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += length
    if chunk:
        yield chunk
