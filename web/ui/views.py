"""Routes of the browser UI. Pages read the database directly and get recommendations from the
same code the JSON API runs (see :mod:`web.ui.search_calls`)."""

from __future__ import annotations

import base64
import io
from typing import Any

from flask import Blueprint, abort, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from web.api.media import media_url
from web.auth import presented_key_is_valid
from web.errors import ApiError
from web.limits import limiter, photo_search_limit
from web.resources import db
from web.ui import queries, search_calls
from web.ui.headers import add_security_headers

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/ui/static",
)
bp.after_request(add_security_headers)

RECOMMENDATIONS_PER_ROW = 8
# Row order and headings on the product and search pages.
ROWS: tuple[tuple[str, str], ...] = (
    ("top", "Tops like this one"),
    ("bottom", "Bottoms like this one"),
    ("full", "Look-alikes"),
)


def _rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A recommendations document (the API's shape) as the rows the templates draw."""
    results = document.get("results") or {}
    missing = document.get("missing") or {}
    rows = []
    for kind, title in ROWS:
        if kind not in results and kind not in missing:
            continue
        rows.append(
            {
                "kind": kind,
                "title": title,
                "results": results.get(kind) or [],
                "missing": missing.get(kind),
            }
        )
    return rows


@bp.app_template_global()
def ui_media_url(key: str | None) -> str | None:
    return media_url(key)


@bp.get("/")
def catalogue() -> str:
    page = request.args.get("page", default=1, type=int) or 1
    listing = queries.catalogue_page(db(), page)
    return render_template("ui/catalogue.html", listing=listing)


@bp.get("/items/<path:sku>")
def item(sku: str) -> str:
    found = queries.item_by_sku(db(), sku)
    if found is None or found.status != "ready":
        abort(404, description=f"There is no product {sku} in the catalogue.")
    document = search_calls.item_recommendations(sku, RECOMMENDATIONS_PER_ROW)
    rows = _rows(document)
    # The page's own photo and every result get their detected boxes: drawn over the photo,
    # and cut out as the matched crop in the "tops/bottoms like this one" rows.
    shown = {sku} | {hit["sku"] for row in rows for hit in row["results"]}
    boxes = queries.detections(db(), sorted(shown), document.get("model_version"))
    return render_template("ui/item.html", item=found, rows=rows, detections=boxes)


@bp.get("/search")
def search_form() -> str:
    return render_template("ui/search.html", rows=None, error=None)


@bp.post("/search")
@limiter.limit(photo_search_limit, exempt_when=presented_key_is_valid)
def search() -> tuple[str, int] | str:
    upload = request.files.get("image")
    if upload is None or not upload.filename:
        return render_template(
            "ui/search.html", rows=None, error="Choose a photo to search with."
        ), 400
    try:
        data, document = search_calls.photo_recommendations(upload, RECOMMENDATIONS_PER_ROW)
    except ApiError as exc:
        # The same refusal the API would give (bad image, no worker in time), said on the page.
        return render_template("ui/search.html", rows=None, error=exc.message), exc.status
    # Shown back from the bytes in hand: the shopper's photo is never stored.
    mime = Image.MIME.get(Image.open(io.BytesIO(data)).format or "", "image/jpeg")
    query_image_url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return render_template(
        "ui/search.html", rows=_rows(document), error=None, query_image_url=query_image_url
    )


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    view = queries.job_view(db(), job_id)
    if view is None:
        abort(404, description="There is no such ingestion job.")
    return render_template("ui/job.html", job=view, status_url=f"/api/v1/jobs/{view.id}")


@bp.errorhandler(HTTPException)
def _html_error(exc: HTTPException) -> tuple[str, int]:
    # Pages get pages: the app-wide handler answers JSON, which is right for the API only.
    status = exc.code or 500
    return render_template(
        "ui/error.html", status=status, title=exc.name, message=exc.description
    ), status


@bp.errorhandler(ApiError)
def _html_api_error(exc: ApiError) -> tuple[str, int]:
    return render_template(
        "ui/error.html", status=exc.status, title=exc.code, message=exc.message
    ), exc.status
