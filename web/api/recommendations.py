"""``GET /api/v1/items/<sku>/recommendations`` and ``POST /api/v1/recommendations``.

Both read this process's copy of the cached matrices (web.search_state) and correct it against
PostgreSQL (shared.search.recommender), so answers are exact. The UI calls
:func:`recommend_for_item` and :func:`recommend_for_upload` directly (web.ui.search_calls).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

from flask import request
from flask_smorest import Blueprint
from marshmallow import ValidationError
from sqlalchemy import text
from werkzeug.datastructures import FileStorage

from shared import task_names
from shared.images import ImageRejected, probe
from shared.media import MediaStore
from shared.queueing import QUEUE_QUERY
from shared.search.matrix_cache import Generation
from shared.search.recommender import Hit, fetch_delta, nearest
from shared.vectors import decode
from web.api.recommendation_schemas import RecommendationQuery, RecommendationsSchema
from web.errors import ApiError
from web.resources import celery_client, db, settings
from web.search_state import CacheUnavailable, search_state

blp = Blueprint(
    "recommendations",
    __name__,
    url_prefix="/api/v1",
    description="You may also like: nearest catalogue items by top, bottom and whole photo.",
)

RETRY_AFTER_S = "2"
_ITEM_MISSING = {
    "top": "no top garment was detected in this item's photo",
    "bottom": "no bottom garment was detected in this item's photo",
    "full": "this item has no whole-photo vector",
}
_PHOTO_MISSING = {
    "top": "no top garment was detected in the uploaded photo",
    "bottom": "no bottom garment was detected in the uploaded photo",
    "full": "the uploaded photo has no whole-photo vector",
}


def _unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": RETRY_AFTER_S})


def _generation() -> Generation:
    try:
        return search_state().current()
    except CacheUnavailable as exc:
        raise _unavailable(
            "cache_unavailable", "Recommendations are being prepared; retry in a moment."
        ) from exc


def image_url(media_key: str | None) -> str | None:
    if not media_key:
        return None
    base = (settings().public_base_url or "").rstrip("/")
    return f"{base}/media/{media_key}"


def _hits(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [
        {"sku": h.sku, "distance": h.distance, "image_url": image_url(h.media_key)} for h in hits
    ]


def _search(
    generation: Generation,
    version: str,
    queries: dict[str, Any],
    kinds: Sequence[str],
    k: int,
    missing_reasons: dict[str, str],
    exclude_item_id: int | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    session = db()
    wanted = [kind for kind in kinds if kind in queries]
    delta = fetch_delta(session, generation, version, wanted) if wanted else []
    results: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    for kind in kinds:
        if kind not in queries:
            results[kind] = []
            missing[kind] = missing_reasons[kind]
            continue
        hits = nearest(
            session,
            generation.matrix(version, kind),
            delta,
            version,
            kind,
            queries[kind],
            k,
            exclude_item_id=exclude_item_id,
        )
        results[kind] = _hits(hits)
    return results, missing


def recommend_for_item(sku: str, k: int, kinds: Sequence[str]) -> dict[str, Any]:
    generation = _generation()
    rows = (
        db()
        .execute(
            text(
                "SELECT i.id, i.status, i.error, e.kind, e.model_version, e.vector, e.id"
                " FROM items i LEFT JOIN embeddings e ON e.item_id = i.id WHERE i.sku = :sku"
            ),
            {"sku": sku},
        )
        .all()
    )
    if not rows:
        raise ApiError(404, "item_not_found", f"No item with SKU {sku!r}.")
    item_id, status = rows[0][0], rows[0][1]
    embedded = [r for r in rows if r[3] is not None]
    if not embedded:
        detail = {"status": status}
        if status == "failed":
            raise ApiError(
                409, "item_not_embedded", f"Item {sku!r} failed ingestion: {rows[0][2]}", detail
            )
        raise ApiError(
            409,
            "item_not_embedded",
            f"Item {sku!r} has no vectors yet (status {status}); retry once ingestion is done.",
            detail,
        )
    versions = {r[4] for r in embedded}
    if generation.current_version in versions:
        version = generation.current_version
    else:
        # Embedded only by a model the cache has not seen yet: its newest vectors decide.
        version = max(embedded, key=lambda r: r[6])[4]
    queries = {r[3]: decode(r[5]) for r in embedded if r[4] == version}
    results, missing = _search(
        generation, version, queries, kinds, k, _ITEM_MISSING, exclude_item_id=item_id
    )
    return {"sku": sku, "model_version": version, "results": results, "missing": missing}


def _read_upload(upload: FileStorage | None) -> bytes:
    limit = settings().max_upload_bytes
    if upload is None:
        raise ApiError(422, "image_required", "Send the photo as the multipart file 'image'.")
    data = upload.stream.read(limit + 1)
    if not data:
        raise ApiError(422, "image_rejected", "The uploaded file is empty.", {"reason": "empty"})
    if len(data) > limit:
        raise ApiError(
            422,
            "image_rejected",
            f"The photo is larger than {limit} bytes.",
            {"reason": "too_large"},
        )
    try:
        probe(data, settings().max_image_pixels)
    except ImageRejected as exc:
        raise ApiError(422, "image_rejected", exc.message, {"reason": exc.reason}) from exc
    return data


def _embed_upload(media_key: str) -> dict[str, Any]:
    """Ask a ``query`` worker to embed the photo; 503 when none answers in time."""
    timeout = settings().query_timeout_s
    # expires: a worker that only gets to it after we gave up skips it instead of wasting time.
    result = celery_client().send_task(
        task_names.EMBED_QUERY,
        kwargs={"media_key": media_key},
        queue=QUEUE_QUERY,
        expires=timeout,
    )
    # Polling the result key (thread-safe) rather than result.get(), whose Redis pub/sub
    # consumer must not be shared between the threads of one web process.
    deadline = time.monotonic() + timeout
    delay = 0.005
    try:
        while not result.ready():
            if time.monotonic() >= deadline:
                raise _unavailable(
                    "query_timeout", f"No worker embedded the photo within {timeout:g} s."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        if not result.successful():
            raise _unavailable("query_failed", "The photo could not be embedded; retry later.")
        return result.result
    finally:
        result.forget()


def recommend_for_upload(
    upload: FileStorage | None, k: int, kinds: Sequence[str]
) -> dict[str, Any]:
    data = _read_upload(upload)
    generation = _generation()
    stored = MediaStore(settings().media_root).put_bytes(data)
    answer = _embed_upload(stored.key)
    if "error" in answer:
        error = answer["error"]
        raise ApiError(422, "image_rejected", error["message"], {"reason": error["reason"]})
    version = answer["model_version"]
    queries = {
        kind: decode(base64.b64decode(encoded)) for kind, encoded in answer["vectors"].items()
    }
    results, missing = _search(generation, version, queries, kinds, k, _PHOTO_MISSING)
    return {
        "model_version": version,
        "query": {
            "media_key": stored.key,
            "image_url": image_url(stored.key),
            "crops": answer.get("crops", {}),
        },
        "results": results,
        "missing": missing,
    }


def _generation_header() -> dict[str, str]:
    held = search_state().generation
    return {"X-Cache-Generation": held.name} if held is not None else {}


@blp.route("/items/<string:sku>/recommendations")
@blp.arguments(RecommendationQuery, location="query")
@blp.response(200, RecommendationsSchema)
def item_recommendations(args: dict[str, Any], sku: str) -> Any:
    """The k nearest other items per kind, nearest first (ties by item id)."""
    body = recommend_for_item(sku, k=args["k"], kinds=args["kinds"])
    return body, 200, _generation_header()


@blp.route("/recommendations", methods=["POST"])
@blp.response(200, RecommendationsSchema)
def photo_recommendations() -> Any:
    """Recommendations for an uploaded photo (multipart ``image``; optional ``k``, ``kinds``)."""
    form = {key: request.form[key] for key in ("k", "kinds") if key in request.form}
    try:
        args = RecommendationQuery().load(form)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_error", "The request is not valid; see details.", exc.messages
        ) from exc
    body = recommend_for_upload(request.files.get("image"), k=args["k"], kinds=args["kinds"])
    return body, 200, _generation_header()
