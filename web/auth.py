"""API-key authentication: ``Authorization: Bearer <key>`` with a key from ``API_KEYS``."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request

from web.errors import ApiError
from web.resources import settings

F = TypeVar("F", bound=Callable[..., Any])


def _key_accepted(presented: str, keys: tuple[str, ...]) -> bool:
    # compare_digest against every key: no early exit that would time which key matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    return ok


def _check_key() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    keys = settings().api_keys
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401,
            "unauthorized",
            "An API key is required: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not keys or not _key_accepted(presented.strip(), keys):
        raise ApiError(
            401,
            "invalid_api_key",
            "The API key is not valid.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def caller_has_key() -> bool:
    """Whether this request comes from a key holder; anonymous when it sends no key at all.

    A key that is sent but wrong is refused (401) rather than silently read as anonymous.
    """
    if "Authorization" not in request.headers:
        return False
    _check_key()
    return True


def presented_key_is_valid() -> bool:
    """True when the request carries a valid API key (no error when it carries none)."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    keys = settings().api_keys
    return scheme.lower() == "bearer" and bool(keys) and _key_accepted(presented.strip(), keys)


def require_api_key(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _check_key()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
