"""The request class: every uploaded file is capped at MAX_UPLOAD_BYTES while it streams in.

Werkzeug spools each multipart file part to a temporary file as it parses the body. Counting the
bytes written there refuses an oversized photo (413) as soon as it passes the limit, before the
rest of the body is read and long before anything reaches the media store. The whole body stays
capped by MAX_CONTENT_LENGTH (MAX_REQUEST_BYTES).
"""

from __future__ import annotations

from tempfile import SpooledTemporaryFile
from typing import IO, Any

from flask import Request, current_app
from typing_extensions import override
from werkzeug.exceptions import RequestEntityTooLarge

# Werkzeug's own threshold: smaller parts stay in memory, larger ones go to a temporary file.
_SPOOL_IN_MEMORY = 500 * 1024


class _CappedSpool(SpooledTemporaryFile[bytes]):
    def __init__(self, limit: int, filename: str | None) -> None:
        super().__init__(max_size=_SPOOL_IN_MEMORY, mode="rb+")
        self._limit = limit
        self._filename = filename
        self._written = 0

    def write(self, data: Any) -> int:
        self._written += len(data)
        if self._written > self._limit:
            name = f" ({self._filename!r})" if self._filename else ""
            raise RequestEntityTooLarge(
                f"An uploaded file{name} is larger than the limit of {self._limit} bytes."
            )
        return super().write(data)


class CappedRequest(Request):
    """A Flask request whose file parts may each hold at most MAX_UPLOAD_BYTES."""

    @override
    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        limit = current_app.config["SETTINGS"].max_upload_bytes
        return _CappedSpool(limit, filename)
