"""An item's photo as bytes, from whichever source it names (URL, import path or upload), stored
content-addressed in the media store before any transaction names it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.ingestion.errors import SourceError
from workers.ingestion.fetch import FetchPolicy, fetch_url
from workers.ingestion.paths import read_import_path
from workers.ingestion.work import Failed, PendingItem, StoredPhoto

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.media import MediaStore


def _fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        settings.fetch_timeout_s,
        settings.fetch_max_bytes,
        settings.fetch_allow_private,
        frozenset(settings.fetch_allowed_ports),
    )


def _too_large(size: int, limit: int) -> SourceError:
    return SourceError("too_large", f"the file has {size} bytes; the limit is {limit}")


def _read_upload(settings: Settings, media: MediaStore, media_key: str) -> bytes:
    try:
        path = media.path_for(media_key)
        size = path.stat().st_size
    except (KeyError, FileNotFoundError):
        raise SourceError("media_missing", "the uploaded file is missing") from None
    if size > settings.max_upload_bytes:
        raise _too_large(size, settings.max_upload_bytes)
    return path.read_bytes()


def _read_source(settings: Settings, media: MediaStore, item: PendingItem) -> bytes:
    if item.item_id is None:
        raise SourceError("item_deleted", "the item was deleted before it was processed")
    if item.source_url:
        return fetch_url(item.source_url, _fetch_policy(settings))
    if item.source_path:
        return read_import_path(settings.import_root, item.source_path, settings.max_upload_bytes)
    if item.media_key:
        return _read_upload(settings, media, item.media_key)
    raise SourceError("no_source", "the item has no image, URL or path")


def read_photo(settings: Settings, media: MediaStore, item: PendingItem) -> StoredPhoto | Failed:
    """The item's photo, stored; or why it cannot be had (the item fails, the batch goes on)."""
    try:
        data = _read_source(settings, media, item)
        if len(data) > settings.max_upload_bytes:
            raise _too_large(len(data), settings.max_upload_bytes)
    except SourceError as exc:
        return Failed(exc.reason, exc.message)
    stored = media.put_bytes(data)
    return StoredPhoto(data=data, key=stored.key, sha256=stored.sha256)
