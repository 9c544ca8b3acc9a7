"""Routes of the browser UI. Pages call the same domain services as the JSON API
(web.services): a fix or a change in ranking shows up in both at once, and a service's refusal
is shown as a page with the status the API would answer with."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from shared.search import filters
from shared.vocabulary import DISPLAY_ORDER, ItemStatus, VectorKind
from web.auth import presented_key_is_valid
from web.errors import ApiError, api_error
from web.limits import limiter, photo_search_limit
from web.links import media_url
from web.resources import db
from web.services import ingestion, items, models, recommendations
from web.services.errors import NotFound, ServiceError
from web.ui import queries
from web.ui.detections import from_photo_search
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
CATALOGUE_PAGE_SIZE = 24
JOB_FAILURES_SHOWN = 20
TITLES = {
    VectorKind.TOP: "Tops like this one",
    VectorKind.BOTTOM: "Bottoms like this one",
    VectorKind.FULL: "Look-alikes",
}
# The product page's filters: "in stock" where items carry this attribute, "one per family"
# for the first of these attributes the item has (the style colour variants share).
STOCK_ATTRIBUTE = "in_stock"
FAMILY_ATTRIBUTES = ("style", "family")
# Row order and headings on the product and search pages.
ROWS: tuple[tuple[str, str], ...] = tuple((kind, TITLES[kind]) for kind in DISPLAY_ORDER)


def _rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
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
    listing = items.ready_items_page(page, CATALOGUE_PAGE_SIZE)
    versions = models.overview()
    building = [v for v in versions["versions"] if v["state"] == "building"]
    return render_template(
        "ui/catalogue.html", listing=listing, serving=versions["serving"], building=building
    )


@bp.get("/items/<path:sku>")
def item(sku: str) -> str:
    found = items.item_row(sku)
    if found is None or found.status != ItemStatus.READY:
        abort(404, description=f"There is no product {sku} in the catalogue.")
    offered = _page_filters(found.attributes or {})
    spec = filters.parse(
        [(f"attr.{STOCK_ATTRIBUTE}", "true")] if offered["in_stock"] else [],
        distinct=offered["family"] if offered["one_per_family"] else None,
    )
    document = recommendations.recommend_for_item(
        sku, k=RECOMMENDATIONS_PER_ROW, kinds=tuple(VectorKind), spec=spec
    )
    rows = _rows(document)
    # The page's own photo and every result get their detected boxes: drawn over the photo,
    # and cut out as the matched crop in the "tops/bottoms like this one" rows.
    shown = {sku} | {hit["sku"] for row in rows for hit in row["results"]}
    boxes = queries.detections(db(), sorted(shown), document.get("model_version"))
    return render_template(
        "ui/item.html", item=found, rows=rows, detections=boxes, page_filters=offered
    )


def _page_filters(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Which filters this product's page offers (from its own attributes) and which are on."""
    family = next((name for name in FAMILY_ATTRIBUTES if name in attributes), None)
    stock = STOCK_ATTRIBUTE in attributes
    return {
        "stock_offered": stock,
        "family": family,
        "in_stock": stock and request.args.get("in_stock") == "1",
        "one_per_family": family is not None and request.args.get("one_per_family") == "1",
    }


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
        # Shown back from these bytes below: the shopper's photo is never stored.
        data = recommendations.read_photo(upload.stream)
        document = recommendations.recommend_for_photo(
            data, k=RECOMMENDATIONS_PER_ROW, kinds=tuple(VectorKind)
        )
    except ServiceError as exc:
        # The same refusal the API would give (bad image, no worker in time), said on the page.
        status = api_error(exc).status
        return render_template("ui/search.html", rows=None, error=exc.message), status
    mime = Image.MIME.get(Image.open(io.BytesIO(data)).format or "", "image/jpeg")
    query_image_url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    rows = _rows(document)
    query = document.get("query") or {}
    # The boxes the worker found on the photo, drawn over it; each result's own box gives its
    # card the matched garment's category and score.
    shown = sorted({hit["sku"] for row in rows for hit in row["results"]})
    return render_template(
        "ui/search.html",
        rows=rows,
        error=None,
        query_image_url=query_image_url,
        query=query,
        query_boxes=from_photo_search(query),
        detections=queries.detections(db(), shown, document.get("model_version")),
    )


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    try:
        report = ingestion.job_report(job_id, per_page=JOB_FAILURES_SHOWN)
    except NotFound:
        abort(404, description="There is no such ingestion job.")
    return render_template("ui/job.html", job=report, status_url=f"/api/v1/jobs/{report.id}")


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


@bp.errorhandler(ServiceError)
def _html_service_error(exc: ServiceError) -> tuple[str, int]:
    # Refused as the API would refuse (an item without vectors yet, no worker in time).
    return _html_api_error(api_error(exc))
