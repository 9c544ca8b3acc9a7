"""Delete media no row references, once it is older than ``MEDIA_GRACE_S``.

The store holds bytes of live items and their garment crops, and also of deleted items, of
replaced photos and vectors, of photo searches that have answered, and of uploads whose request
failed: nothing else ever removes those. A file is deleted when no ``items.media_key`` and no
``embeddings.crop_key`` names it and its mtime is older than the grace period. The grace period
protects bytes in flight: the web stores an upload before it commits the row naming it, a batch
stores fetched bytes and crops before its commit, a photo search stores the photo before a
worker reads it.

A writer that stores bytes already present refreshes the file's mtime (shared.media), so a
file about to be referenced again is young. A file is moved aside before its age is checked a
last time: a writer that touched it first is seen and the file put back; one that comes after
finds it gone and writes it afresh. No file a writer has just relied on is lost.

Failed items keep the bytes that failed (a text file, a broken JPEG) only for the grace period:
then their reference is dropped, so the store does not serve rejected uploads for good.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

from shared.db import rowcount, session_scope
from shared.media import is_valid_key
from shared.vocabulary import ItemStatus, JobItemStatus

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

_CHUNK = 1000
_ASIDE = ".prune-"
_UPLOAD_TMP = ".upload-"


@dataclass
class PruneReport:
    deleted: int = 0
    bytes_freed: int = 0
    referenced: int = 0
    recent: int = 0
    released_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _release_failed_items(settings: Settings) -> int:
    """Failed items older than the grace period stop referencing the bytes that failed."""
    with session_scope(settings) as session:
        result = session.execute(
            text(
                "UPDATE items SET media_key = NULL, updated_at = now()"
                " WHERE status = :failed AND media_key IS NOT NULL"
                " AND updated_at < now() - make_interval(secs => :grace)"
                # An item a pending job still holds may be reprocessed from these bytes.
                " AND NOT EXISTS (SELECT 1 FROM job_items ji"
                "   WHERE ji.item_id = items.id AND ji.status = :pending)"
            ),
            {
                "grace": settings.media_grace_s,
                "failed": ItemStatus.FAILED,
                "pending": JobItemStatus.PENDING,
            },
        )
        return rowcount(result)


def _files(root: Path) -> Iterator[os.DirEntry[str]]:
    """Every entry two folders down (``ab/cd/<key>``), the layout shared.media writes."""
    for level1 in _scandir(root):
        if level1.is_dir(follow_symlinks=False) and len(level1.name) == 2:
            for level2 in _scandir(Path(level1.path)):
                if level2.is_dir(follow_symlinks=False) and len(level2.name) == 2:
                    for entry in _scandir(Path(level2.path)):
                        if entry.is_file(follow_symlinks=False):
                            yield entry


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _referenced(settings: Settings, keys: list[str]) -> set[str]:
    with session_scope(settings) as session:
        # Both columns are indexed: two index probes per key.
        found = session.scalars(
            text(
                "SELECT media_key FROM items WHERE media_key = ANY(:keys)"
                " UNION SELECT crop_key FROM embeddings WHERE crop_key = ANY(:keys)"
            ),
            {"keys": keys},
        )
        return {str(key) for key in found}


def _delete_if_still_old(path: Path, cutoff: float) -> int | None:
    """Delete ``path`` unless a writer touched it; the bytes freed, or None when kept."""
    aside = path.with_name(_ASIDE + path.name)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    stat = aside.stat()
    if stat.st_mtime >= cutoff:
        os.replace(aside, path)
        return None
    os.unlink(aside)
    return stat.st_size


def _finish_interrupted(path: Path, cutoff: float, report: PruneReport) -> None:
    """A file left aside by a run that died: deleted if still old, otherwise put back."""
    target = path.with_name(path.name[len(_ASIDE) :])
    stat = path.stat()
    if stat.st_mtime < cutoff:
        os.unlink(path)
        report.deleted += 1
        report.bytes_freed += stat.st_size
    elif not target.exists():
        os.replace(path, target)


def _prune_chunk(
    settings: Settings, root: Path, chunk: list[str], cutoff: float, report: PruneReport
) -> None:
    referenced = _referenced(settings, chunk)
    report.referenced += len(referenced)
    for key in chunk:
        if key in referenced:
            continue
        freed = _delete_if_still_old(root / key[:2] / key[2:4] / key, cutoff)
        if freed is not None:
            report.deleted += 1
            report.bytes_freed += freed
        else:
            report.recent += 1


def _prune_abandoned_uploads(root: Path, cutoff: float, report: PruneReport) -> None:
    """Temporary files of writers that died mid-upload."""
    for entry in _scandir(root):
        if entry.name.startswith(_UPLOAD_TMP) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                if stat.st_mtime < cutoff:
                    os.unlink(entry.path)
                    report.deleted += 1
                    report.bytes_freed += stat.st_size


def prune_media(settings: Settings) -> PruneReport:
    """One pass over ``MEDIA_ROOT``; what it deleted and kept."""
    report = PruneReport(released_failed=_release_failed_items(settings))
    root = Path(settings.media_root)
    cutoff = time.time() - settings.media_grace_s
    chunk: list[str] = []
    for entry in _files(root):
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if entry.name.startswith(_ASIDE):
                _finish_interrupted(Path(entry.path), cutoff, report)
                continue
        except FileNotFoundError:
            continue
        if not is_valid_key(entry.name):
            continue
        if mtime >= cutoff:
            report.recent += 1
            continue
        chunk.append(entry.name)
        if len(chunk) >= _CHUNK:
            _prune_chunk(settings, root, chunk, cutoff, report)
            chunk = []
    if chunk:
        _prune_chunk(settings, root, chunk, cutoff, report)
    _prune_abandoned_uploads(root, cutoff, report)
    log.info("media pruned", extra=report.as_dict())
    return report
