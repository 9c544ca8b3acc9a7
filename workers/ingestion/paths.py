"""Read an image from a server path, only from inside ``IMPORT_ROOT``.

A path with a ``..`` component is refused outright; anything else is resolved (following every
symlink) and must still be inside the resolved import root, so a symlink cannot lead out.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from workers.ingestion.errors import SourceError


def _rejected(message: str) -> SourceError:
    return SourceError("path_rejected", message)


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
    except FileNotFoundError:
        raise SourceError("not_found", f"no file at {raw!r} under IMPORT_ROOT") from None
    except (OSError, RuntimeError) as exc:
        raise _rejected(f"the path {raw!r} cannot be resolved: {exc}") from None
    if not resolved.is_relative_to(root):
        raise _rejected(f"the path {raw!r} leads outside IMPORT_ROOT")
    return resolved


def read_import_path(import_root: Path | None, raw: str, max_bytes: int) -> bytes:
    resolved = resolve_import_path(import_root, raw)
    try:
        # O_NOFOLLOW: the resolved path has no symlink left; refuse one swapped in since.
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _rejected(f"the path {raw!r} cannot be opened: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _rejected(f"the path {raw!r} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > max_bytes:
            raise SourceError(
                "too_large", f"the file has {info.st_size} bytes; the limit is {max_bytes}"
            )
        return handle.read(max_bytes + 1)
