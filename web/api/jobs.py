"""``POST /api/v1/jobs`` (submit images for ingestion) and ``GET /api/v1/jobs/<id>``.

The request is validated completely before anything is written. Items, the job and its job
items are then written in one transaction, the job's start task is sent while that transaction
is still open, and only then does it commit: a broker that cannot be reached rolls everything
back (503, nothing half-created), and a process that dies at any point leaves either no job or
a job whose task is already queued (the worker waits for the commit: lock_for_dispatch).
Whether an image is usable is the worker's decision: a bad file fails as its own item, not the
whole request.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import case, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from shared import task_names
from shared.ingest_state import lock_for_dispatch
from shared.media import MediaStore, StoredMedia
from shared.models import Item, Job, JobItem
from shared.queueing import QUEUE_DEFAULT
from web.api.media import public_url
from web.api.schemas import (
    JobCreatedSchema,
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
from web.resources import celery_client, db, settings

log = logging.getLogger(__name__)

blp = Blueprint("jobs", __name__, url_prefix="/api/v1", description="Ingestion jobs")

_JSON = "application/json"
_MULTIPART = "multipart/form-data"


@dataclass
class NewItem:
    sku: str
    attributes: dict[str, Any] | None
    upload: FileStorage | None = None
    url: str | None = None
    path: str | None = None
    stored: StoredMedia | None = None


def _parse_body(schema: type, location: str) -> dict[str, Any]:
    # The same webargs parser flask-smorest's @blp.arguments uses: schema validation, 422 on error.
    return blp.ARGUMENTS_PARSER.parse(schema(), request, location=location)


def _items_from_json() -> list[NewItem]:
    if request.get_json(silent=True) is None:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    body = _parse_body(JobCreateJsonSchema, "json")
    return [
        NewItem(
            sku=it["sku"],
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
        sku = skus[i] if skus is not None else _sku_from_filename(upload.filename)
        if not sku:
            raise ApiError(
                422,
                "invalid_sku",
                f"file #{i + 1} ({upload.filename!r}) has no name to take a SKU from; "
                "send a 'sku' field per file",
            )
        problem = sku_problem(sku)
        if problem:
            raise ApiError(422, "invalid_sku", f"file #{i + 1} ({upload.filename!r}): {problem}")
        items.append(
            NewItem(sku=sku, attributes=attributes[i] if attributes else None, upload=upload)
        )
    return items


def _check_unique(items: list[NewItem]) -> None:
    counts = Counter(item.sku for item in items)
    repeated = sorted(sku for sku, n in counts.items() if n > 1)
    if repeated:
        raise ApiError(
            422,
            "duplicate_sku",
            f"each SKU may appear once per job; {repeated[0]!r} appears more than once",
            details={"repeated": repeated[:10]},
        )


def _upsert_item(session: Session, new: NewItem) -> int:
    table = Item.__table__
    values: dict[str, Any] = {"sku": new.sku, "status": "pending", "error": None}
    if new.attributes is not None:
        values["attributes"] = new.attributes
    statement = pg_insert(table)
    current, incoming = table.c, statement.excluded
    updates: dict[str, Any] = {"updated_at": func.now()}
    if new.attributes is not None:
        updates["attributes"] = incoming.attributes
    if new.stored is not None:
        values.update(
            media_key=new.stored.key,
            image_sha256=new.stored.sha256,
            byte_size=new.stored.size,
            source_url=None,
            source_path=None,
        )
        same_image = (current.status == "ready") & (current.image_sha256 == incoming.image_sha256)
        # The same photo of a ready item stays ready (the worker will skip it); a new photo
        # makes the item pending until it is embedded.
        updates.update(
            media_key=incoming.media_key,
            image_sha256=incoming.image_sha256,
            byte_size=incoming.byte_size,
            source_url=None,
            source_path=None,
            status=func.coalesce(_when(same_image, "ready"), "pending"),
            error=None,
        )
    else:
        values.update(source_url=new.url, source_path=new.path)
        # Bytes behind a URL or path are only known once fetched: the worker compares hashes.
        updates.update(
            source_url=incoming.source_url,
            source_path=incoming.source_path,
            status=func.coalesce(_when(current.status == "ready", "ready"), "pending"),
            error=None,
        )
    statement = (
        statement.values(**values)
        .on_conflict_do_update(index_elements=["sku"], set_=updates)
        .returning(table.c.id)
    )
    return session.execute(statement).scalar_one()


def _when(condition: Any, value: str) -> Any:
    return case((condition, literal(value)), else_=None)


def _job_source(items: list[NewItem]) -> str:
    kinds = {"upload" if i.upload else "url" if i.url else "path" for i in items}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _create_job(items: list[NewItem]) -> Job:
    session = db()
    try:
        job = Job(id=uuid.uuid4(), status="queued", source=_job_source(items), total=len(items))
        session.add(job)
        session.flush()
        # Rows are locked in one canonical order (SKU, by code point, as PostgreSQL's "C"
        # collation sorts them) whatever the submission order: two jobs naming the same items in
        # different orders, or a job and a worker's batch commit, then wait for each other
        # instead of deadlocking. Positions keep the submitted order.
        by_sku = sorted(enumerate(items), key=lambda pair: pair[1].sku)
        for position, new in by_sku:
            item_id = _upsert_item(session, new)
            session.add(JobItem(job_id=job.id, item_id=item_id, position=position, sku=new.sku))
        session.flush()
        lock_for_dispatch(session, job.id)
        _enqueue(job)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return job


def _enqueue(job: Job) -> None:
    try:
        # Nobody reads this task's result: without ignore_result the client also subscribes to
        # it on the result backend, which retries for ~20 s when the broker is down, all of it
        # inside the open transaction.
        celery_client().send_task(
            task_names.START_JOB, args=[str(job.id)], queue=QUEUE_DEFAULT, ignore_result=True
        )
    except Exception:  # any broker failure: the caller rolls the job back
        log.exception("could not enqueue job", extra={"job_id": str(job.id)})
        raise ApiError(
            503,
            "queue_unavailable",
            "The job could not be queued, so nothing was created. Try again later.",
        ) from None


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
        _check_unique(items)
        media = MediaStore(settings().media_root)
        for new in items:
            if new.upload is not None:
                # Bytes are kept as sent; the worker decides whether they are an image.
                new.stored = media.put_stream(new.upload.stream)
        job = _create_job(items)
        status_url = public_url(url_for("jobs.JobById", job_id=str(job.id)))
        log.info(
            "job created",
            extra={"job_id": str(job.id), "items": len(items), "source": job.source},
        )
        body = {"id": job.id, "status": job.status, "status_url": status_url}
        return body, 202, {"Location": status_url}


def _job_or_404(job_id: str) -> Job:
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        key = None
    job = db().get(Job, key) if key else None
    if job is None:
        raise ApiError(404, "job_not_found", f"No job has the id {job_id!r}.")
    return job


@blp.route("/jobs/<string:job_id>")
class JobById(MethodView):
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, JobSchema)
    @blp.alt_response(404, description="Unknown job")
    def get(self, args: dict[str, Any], job_id: str) -> dict[str, Any]:
        """A job's status, counters, progress and failed items (paged)."""
        job = _job_or_404(job_id)
        session = db()
        counts = session.execute(
            select(
                func.count().filter(JobItem.status == "pending"),
                func.count().filter(JobItem.skipped.is_(True)),
            ).where(JobItem.job_id == job.id)
        ).one()
        page, per_page = args["page"], args["per_page"]
        failed_rows = session.execute(
            select(JobItem.position, JobItem.sku, JobItem.reason, JobItem.error)
            .where(JobItem.job_id == job.id, JobItem.status == "failed")
            .order_by(JobItem.position)
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
        finished = job.done + job.failed
        return {
            "id": job.id,
            "status": job.status,
            "source": job.source,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "skipped": counts[1],
            "pending": counts[0],
            "progress": round(finished / job.total, 4) if job.total else 1.0,
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
                "items": [row._asdict() for row in failed_rows],
            },
        }
