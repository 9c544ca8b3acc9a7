"""Every error leaves as JSON ``{"code": ..., "message": ..., "details"?}``: never HTML, never a
traceback. Views raise :class:`ApiError` for what is wrong with the HTTP request itself; the
domain services raise web.services.errors, mapped to statuses here."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from web.services.errors import Conflict, Invalid, NotFound, ServiceError, Unavailable

log = logging.getLogger(__name__)

# Stable codes for the HTTP statuses werkzeug raises on its own.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with a stable machine-readable ``code`` and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


# The HTTP status of each kind of domain refusal (web.services.errors).
_SERVICE_STATUSES: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Unavailable: 503,
}


def api_error(exc: ServiceError) -> ApiError:
    """The HTTP error a domain refusal is answered with (its code, message and details kept)."""
    status = next((code for kind, code in _SERVICE_STATUSES.items() if isinstance(exc, kind)), 500)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": retry_after} if retry_after else None
    return ApiError(status, exc.code, exc.message, exc.details, headers)


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _handle_service_error(exc: ServiceError) -> Response:
    return _handle_api_error(api_error(exc))


def _handle_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    # flask-smorest/webargs put validation messages in ``data["messages"]``.
    messages = data.get("messages") if isinstance(data, dict) else None
    if messages is not None:
        return error_response(
            422, "validation_error", "The request is not valid; see details.", messages
        )
    message = data.get("message") if isinstance(data, dict) else None
    code = _STATUS_CODES.get(status, f"http_{status}")
    headers = dict(exc.get_response().headers) if status == 405 else None
    if headers:
        headers = {k: v for k, v in headers.items() if k.lower() == "allow"}
    return error_response(status, code, message or exc.description or exc.name, headers=headers)


def _handle_unexpected(_exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "Something went wrong on our side.")


def init_app(app: Flask) -> None:
    # Registered after flask-smorest's own handler, so ours wins.
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(ServiceError, _handle_service_error)
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(Exception, _handle_unexpected)
