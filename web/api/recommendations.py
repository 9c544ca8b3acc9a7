"""``GET /api/v1/items/<sku>/recommendations`` and ``POST /api/v1/recommendations``: HTTP only;
the work is in web.services.recommendations (shared with the UI)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from flask_smorest import Blueprint
from marshmallow import ValidationError

from shared.search import filters
from shared.search.filters import FilterError, FilterSpec
from web.api.recommendation_schemas import (
    ATTRIBUTE_NAME_PATTERN,
    FILTERS_DESCRIPTION,
    KINDS_PATTERN,
    MAX_K,
    ItemRecommendationQuery,
    PhotoFamilyQuery,
    RecommendationQuery,
    RecommendationsSchema,
)
from web.auth import presented_key_is_valid
from web.errors import ApiError
from web.limits import limiter, photo_search_limit
from web.resources import settings
from web.services.recommendations import (
    read_photo,
    recommend_for_item,
    recommend_for_photo,
)

# Multipart framing around one photo and two small fields.
_FORM_OVERHEAD_BYTES = 64 * 1024

blp = Blueprint(
    "recommendations",
    __name__,
    url_prefix="/api/v1",
    description="You may also like: nearest catalogue items by top, bottom and whole photo.",
)


def _filter_spec(
    pairs: list[tuple[str, str]], distinct: str | None, exclude_same: str | None
) -> FilterSpec:
    try:
        return filters.parse(pairs, distinct, exclude_same)
    except FilterError as exc:
        raise ApiError(422, exc.code, exc.message, exc.details) from exc


@blp.route("/items/<string:sku>/recommendations")
# One instance for every request: webargs builds a schema per request from a class.
@blp.arguments(ItemRecommendationQuery(), location="query")
@blp.response(200, RecommendationsSchema)
@blp.alt_response(422, description="A parameter or filter is not valid")
@blp.doc(
    description="Nearest first, ties by item id; exact over the items PostgreSQL holds now."
    + FILTERS_DESCRIPTION
)
def item_recommendations(args: dict[str, Any], sku: str) -> Any:
    """The k nearest other items per kind, nearest first (ties by item id), among the items
    that pass the filters."""
    spec = _filter_spec(
        list(request.args.items(multi=True)), args.get("distinct"), args.get("exclude_same")
    )
    body = recommend_for_item(sku, k=args["k"], kinds=args["kinds"], spec=spec)
    # The body is already what RecommendationsSchema dumps (plain strings, floats, None): it is
    # encoded straight away, since the schema's dump of ~30 hits cost a fifth of the request.
    response = current_app.json.response(body)
    # The generation the lists came from; absent when they were read from PostgreSQL.
    generation = g.get("lists_generation")
    if generation:
        response.headers["X-Lists-Generation"] = generation
    return response


PHOTO_SEARCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "The photo."},
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                    "kinds": {"type": "string", "pattern": KINDS_PATTERN},
                    "distinct": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": filters.MAX_NAME_CHARS,
                        "pattern": ATTRIBUTE_NAME_PATTERN,
                        "description": "Keep only the nearest item of each value of this"
                        " attribute; items without it each stand alone.",
                    },
                },
            }
        }
    },
}


PHOTO_SEARCH_DESCRIPTION = (
    "The photo is not stored. Anonymous callers are rate-limited per address"
    " (`PHOTO_SEARCH_RATE_LIMIT`: 429 with Retry-After); with `PHOTO_SEARCH_REQUIRES_KEY` an API"
    " key is required."
)


@blp.route("/recommendations", methods=["POST"])
@blp.doc(
    requestBody=PHOTO_SEARCH_BODY,
    description=PHOTO_SEARCH_DESCRIPTION
    + "\n\nThe `attr.*` filters and `distinct` are taken from the form fields and the query"
    " string alike." + FILTERS_DESCRIPTION,
)
@blp.response(200, RecommendationsSchema)
@limiter.limit(photo_search_limit, exempt_when=presented_key_is_valid)
def photo_recommendations() -> Any:
    """Recommendations for an uploaded photo (multipart ``image``; optional ``k``, ``kinds``,
    ``distinct`` and ``attr.*`` filters, as form fields or in the query string)."""
    config = settings()
    if config.photo_search_requires_key and not presented_key_is_valid():
        raise ApiError(
            401,
            "unauthorized",
            "Photo search needs an API key: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Refused while streaming (413), before werkzeug spools a large body to disk.
    request.max_content_length = config.max_upload_bytes + _FORM_OVERHEAD_BYTES
    sent = {**request.args.to_dict(), **request.form.to_dict()}
    form = {key: sent[key] for key in ("k", "kinds") if key in sent}
    family = {key: sent[key] for key in ("distinct",) if key in sent}
    try:
        args = RecommendationQuery().load(form)
        args.update(PhotoFamilyQuery().load(family))
    except ValidationError as exc:
        raise ApiError(
            422, "validation_error", "The request is not valid; see details.", exc.messages
        ) from exc
    if "exclude_same" in sent:
        raise ApiError(
            422,
            "validation_error",
            "exclude_same needs an item to compare with: a photo has none.",
            {"exclude_same": ["Not accepted by photo search."]},
        )
    pairs = [*request.args.items(multi=True), *request.form.items(multi=True)]
    spec = _filter_spec(pairs, args.get("distinct"), None)
    upload = request.files.get("image")
    if upload is None:
        raise ApiError(422, "image_required", "Send the photo as the multipart file 'image'.")
    data = read_photo(upload.stream)
    return recommend_for_photo(data, k=args["k"], kinds=args["kinds"], spec=spec)
