"""``POST /api/v1/jobs`` (submit images for ingestion) and ``GET /api/v1/jobs/<id>``: HTTP only.

The request is parsed and validated completely before anything is written; the job itself is
made and read by web.services.ingestion (a queue that cannot be reached: 503, nothing created).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import PurePath
from typing import Any

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.datastructures import FileStorage

from web.api.schemas import (
    JobCreatedSchema,
    JobCreateJsonParseSchema,
    JobCreateJsonSchema,
    JobSchema,
    PageArgsSchema,
    UploadDocSchema,
    UploadFilesSchema,
    UploadFormSchema,
    sku_problem,
)
from web.auth import require_api_key
from web.errors import ApiError
from web.links import public_url
from web.services import ingestion
from web.services.ingestion import NewItem

blp = Blueprint("jobs", __name__, url_prefix="/api/v1", description="Ingestion jobs")

_JSON = "application/json"
_MULTIPART = "multipart/form-data"


def _parse_body(schema: type, location: str) -> dict[str, Any]:
    # The same webargs parser flask-smorest's @blp.arguments uses: schema validation, 422 on error.
    parsed: dict[str, Any] = blp.ARGUMENTS_PARSER.parse(schema(), request, location=location)
    return parsed


def _items_from_json() -> list[NewItem]:
    if request.get_json(silent=True) is None:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    body = _parse_body(JobCreateJsonParseSchema, "json")
    for i, it in enumerate(body["items"]):
        problem = sku_problem(it["sku"])
        if problem:
            raise ApiError(
                422,
                "invalid_sku",
                f"item #{i + 1}: {problem}",
                {"json": {"items": {str(i): {"sku": [problem]}}}},
            )
    return [
        NewItem(
            sku=it["sku"].strip(),
            attributes=it.get("attributes"),
            url=it.get("url"),
            path=it.get("path"),
        )
        for it in body["items"]
    ]


def _sku_from_filename(name: str | None) -> str:
    # Browsers send a bare name; some clients send a path (either separator).
    return PurePath((name or "").replace("\\", "/")).stem.strip()


def _items_from_multipart() -> list[NewItem]:
    form = _parse_body(UploadFormSchema, "form")
    files = _parse_body(UploadFilesSchema, "files")["images"]
    uploads = [f for f in files if isinstance(f, FileStorage)]
    if len(uploads) != len(files):
        raise ApiError(422, "invalid_upload", "Every 'images' part must be a file.")
    skus = form.get("sku")
    if skus is not None and len(skus) != len(uploads):
        raise ApiError(
            422,
            "sku_count_mismatch",
            f"{len(skus)} 'sku' fields for {len(uploads)} files: give one per file or none.",
        )
    attributes = form.get("attributes")
    if attributes is not None and len(attributes) != len(uploads):
        raise ApiError(
            422,
            "attributes_count_mismatch",
            f"{len(attributes)} 'attributes' fields for {len(uploads)} files.",
        )
    items = []
    for i, upload in enumerate(uploads):
        if skus is not None:
            problem = sku_problem(skus[i])
            if problem:
                raise ApiError(
                    422,
                    "invalid_sku",
                    f"'sku' part #{i + 1}: {problem}",
                    {"form": {"sku": {str(i): [problem]}}},
                )
            sku = skus[i].strip()
        else:
            sku = _sku_from_filename(upload.filename)
            if not sku:
                raise ApiError(
                    422,
                    "invalid_sku",
                    f"file #{i + 1} ({upload.filename!r}) has no name to take a SKU from; "
                    "send a 'sku' field per file",
                )
            problem = sku_problem(sku)
            if problem:
                raise ApiError(
                    422, "invalid_sku", f"file #{i + 1} ({upload.filename!r}): {problem}"
                )
        items.append(
            NewItem(sku=sku, attributes=attributes[i] if attributes else None, upload=upload.stream)
        )
    return items


_POST_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            _MULTIPART: {"schema": UploadDocSchema},
            _JSON: {"schema": JobCreateJsonSchema},
        },
    },
    "security": [{"bearer": []}],
}


@blp.route("/jobs")
class Jobs(MethodView):
    @blp.doc(**_POST_DOC)
    @blp.response(202, JobCreatedSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(400, description="Malformed body")
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(413, description="Request body too large")
    @blp.alt_response(415, description="Neither multipart/form-data nor JSON")
    @blp.alt_response(422, description="Invalid fields")
    @blp.alt_response(503, description="The queue is unavailable")
    @require_api_key
    def post(self) -> Any:
        """Submit images (multipart ``images`` files, or JSON items by ``url`` or ``path``)."""
        if request.mimetype == _JSON:
            items = _items_from_json()
        elif request.mimetype == _MULTIPART:
            items = _items_from_multipart()
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                "Send multipart/form-data with 'images' files, or application/json items.",
            )
        job = ingestion.create_job(items)
        status_url = public_url(url_for("jobs.JobById", job_id=str(job.id)))
        body = {"id": job.id, "status": job.status, "status_url": status_url}
        return body, 202, {"Location": status_url}


@blp.route("/jobs/<string:job_id>")
class JobById(MethodView):
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, JobSchema)
    @blp.alt_response(404, description="Unknown job")
    def get(self, args: dict[str, Any], job_id: str) -> dict[str, Any]:
        """A job's status, counters, progress and failed items (paged)."""
        page, per_page = args["page"], args["per_page"]
        job = ingestion.job_report(job_id, page, per_page)
        return {
            "id": job.id,
            "status": job.status,
            "source": job.source,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "skipped": job.skipped,
            "pending": job.pending,
            "progress": job.progress,
            "model_version": job.model_version,
            "error": job.error,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "errors": {
                "page": page,
                "per_page": per_page,
                "total": job.failed,
                "pages": math.ceil(job.failed / per_page) if job.failed else 0,
                "items": [asdict(failure) for failure in job.failures],
            },
        }
