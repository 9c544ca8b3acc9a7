"""``GET /api/v1/items/<sku>/recommendations`` and ``POST /api/v1/recommendations``: HTTP only;
the work is in web.services.recommendations (shared with the UI)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Blueprint
from marshmallow import ValidationError

from web.api.recommendation_schemas import RecommendationQuery, RecommendationsSchema
from web.errors import ApiError
from web.services.recommendations import lists_pointer, recommend_for_item, recommend_for_upload

blp = Blueprint(
    "recommendations",
    __name__,
    url_prefix="/api/v1",
    description="You may also like: nearest catalogue items by top, bottom and whole photo.",
)


@blp.route("/items/<string:sku>/recommendations")
@blp.arguments(RecommendationQuery, location="query")
@blp.response(200, RecommendationsSchema)
def item_recommendations(args: dict[str, Any], sku: str) -> Any:
    """The k nearest other items per kind, nearest first (ties by item id)."""
    body = recommend_for_item(sku, k=args["k"], kinds=args["kinds"])
    generation = lists_pointer().generation()
    headers = {"X-Lists-Generation": generation} if generation else {}
    return body, 200, headers


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
    return recommend_for_upload(request.files.get("image"), k=args["k"], kinds=args["kinds"])
