"""Read an image from a server path, only from inside ``IMPORT_ROOT``.

A path with a ``..`` component is refused outright; anything else is resolved (following every
symlink) and must still be inside the resolved import root, so a symlink cannot lead out. A path
that leads outside the root gets the very error a missing file gets, so a caller cannot learn
which files exist on the host. Only regular files are read: a FIFO or a device is refused
without ever blocking on it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from workers.ingestion.errors import SourceError


def _rejected(message: str) -> SourceError:
    return SourceError("path_rejected", message)


def _not_found(raw: str) -> SourceError:
    return SourceError("not_found", f"no file at {raw!r} under IMPORT_ROOT")


def resolve_import_path(import_root: Path | None, raw: str) -> Path:
    if import_root is None:
        raise _rejected("path ingestion is disabled: IMPORT_ROOT is not set")
    if not raw or "\x00" in raw:
        raise _rejected("the path is empty or holds a NUL byte")
    if ".." in PurePosixPath(raw).parts:
        raise _rejected(f"the path {raw!r} contains '..'")
    root = import_root.resolve()
    candidate = Path(raw) if os.path.isabs(raw) else root / raw
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        # Missing, unreadable or a symlink loop: outside the root these would tell existing host
        # files apart, so every case reads as "no file".
        raise _not_found(raw) from None
    if not resolved.is_relative_to(root):
        raise _not_found(raw)
    return resolved


def read_import_path(import_root: Path | None, raw: str, max_bytes: int) -> bytes:
    resolved = resolve_import_path(import_root, raw)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        # O_NOFOLLOW: the resolved path has no symlink left; refuse one swapped in since.
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise _not_found(raw) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _rejected(f"the path {raw!r} is not a regular file")
    # A regular file never blocks; blocking mode keeps reads whole.
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > max_bytes:
            raise SourceError(
                "too_large", f"the file has {info.st_size} bytes; the limit is {max_bytes}"
            )
        return handle.read(max_bytes + 1)
