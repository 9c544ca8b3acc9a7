"""Content-addressed image bytes under ``MEDIA_ROOT``, shared by the web tier and the workers.

A file's key is the sha256 of its bytes (64 lowercase hex digits), so the same image uploaded
twice is stored once and a key can never name anything outside the store. Writes go to a
temporary file in the destination folder and are renamed into place: a reader sees the whole
file or none of it, and two writers of the same bytes both end with the same complete file.
Files no row references are deleted by workers.maintenance.media_retention once older than
``MEDIA_GRACE_S``; storing bytes that are already here refreshes the file's mtime for that.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


class MediaTooLarge(ValueError):
    """A stream exceeded the byte limit it was stored under."""


@dataclass(frozen=True)
class StoredMedia:
    key: str
    sha256: str
    size: int


def is_valid_key(key: str) -> bool:
    return bool(_KEY.match(key))


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        """Where ``key`` lives; refuses anything that is not a sha256 key (no traversal)."""
        if not is_valid_key(key):
            raise KeyError(f"not a media key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def exists(self, key: str) -> bool:
        return is_valid_key(key) and self.path_for(key).is_file()

    def read(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def put_bytes(self, data: bytes) -> StoredMedia:
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, stream: IO[bytes], max_bytes: int | None = None) -> StoredMedia:
        """Copy a stream into the store, hashing as it goes (never the whole file in memory)."""
        self.root.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise MediaTooLarge(f"more than {max_bytes} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = hasher.hexdigest()
            path = self.path_for(digest)
            try:
                # A file already here is touched, not rewritten: its fresh mtime tells media
                # retention (workers.maintenance) that it is in use before any row names it.
                os.utime(path)
                os.unlink(tmp_name)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp_name, 0o644)
                os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return StoredMedia(digest, digest, size)


def sniff_content_type(head: bytes) -> str:
    """The image MIME type from a file's first bytes (served with ``nosniff``)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"
