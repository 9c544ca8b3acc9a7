"""The OpenAPI document's error responses: every one is the ``{code, message, details}`` body.

``ErrorSchema`` replaces flask-smorest's own error schema (its ``DEFAULT_ERROR`` and per-status
components), and :class:`ErrorBodyPlugin` gives the same body to every 4xx/5xx response a view
documents by description only, so no error response is left without a schema.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin
from flask_smorest import Api
from marshmallow import Schema, fields
from typing_extensions import override


class ErrorSchema(Schema):
    code = fields.String(
        required=True,
        metadata={"description": "A stable machine-readable code, e.g. item_not_found."},
    )
    message = fields.String(required=True, metadata={"description": "What went wrong, in words."})
    details = fields.Raw(
        metadata={"description": "Optional specifics: invalid fields, the job id, a reason..."}
    )


class ErrorBodyPlugin(BasePlugin):
    @override
    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        for operation in (operations or {}).values():
            for status, response in (operation.get("responses") or {}).items():
                if not _is_error(status) or not isinstance(response, dict):
                    continue
                if "$ref" in response or response.get("content"):
                    continue
                response["content"] = {"application/json": {"schema": "Error"}}


def _is_error(status: Any) -> bool:
    text = str(status)
    return text == "default" or (text.isdigit() and int(text) >= 400)


class VisrecApi(Api):  # type: ignore[misc]  # flask-smorest ships no type hints
    ERROR_SCHEMA = ErrorSchema
