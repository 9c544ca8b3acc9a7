"""The one exception an image source raises: a stable reason plus a message for people."""

from __future__ import annotations


class SourceError(Exception):
    """The bytes of one item cannot be had; the item fails with ``reason``, the batch goes on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
