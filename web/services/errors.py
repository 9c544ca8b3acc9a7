"""What the domain services refuse with, in domain terms; web.errors turns each into HTTP.

Every refusal carries a stable machine-readable ``code`` (part of the API's contract), a message
for people and optional ``details``. The class says what kind of refusal it is; the HTTP status
that goes with it is web.errors' business, so the API and the pages answer alike.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refusal the caller can act on."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class NotFound(ServiceError):
    """The named item or job does not exist."""


class Conflict(ServiceError):
    """The thing exists but is not in a state that allows the request (yet)."""


class Invalid(ServiceError):
    """The request's content breaks a domain rule (a repeated SKU, a photo that is no image)."""


class Unavailable(ServiceError):
    """A dependency (the queue, a query worker) could not do its part; worth retrying.

    ``retry_after``: seconds a client should wait before retrying, when there is a useful hint.
    """

    def __init__(
        self, code: str, message: str, details: Any = None, retry_after: str | None = None
    ) -> None:
        super().__init__(code, message, details)
        self.retry_after = retry_after
