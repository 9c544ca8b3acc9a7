"""``GET /media/<key>``: stored image bytes by content key (the ``image_url`` of items)."""

from __future__ import annotations

from flask import Response, send_file
from flask_smorest import Blueprint

from shared.media import MediaStore, is_valid_key, sniff_content_type
from web.errors import ApiError
from web.resources import settings

blp = Blueprint("media", __name__, url_prefix="/media", description="Stored images")

# Content-addressed: the bytes behind a key never change, so caches may keep them forever.
_IMMUTABLE_S = 365 * 24 * 3600


@blp.route("/<string:key>")
@blp.response(200, content_type="image/*")
def get_media(key: str) -> Response:
    """An image by its sha256 key."""
    if not is_valid_key(key):
        raise ApiError(404, "media_not_found", "No image has this key.")
    path = MediaStore(settings().media_root).path_for(key)
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise ApiError(404, "media_not_found", "No image has this key.") from None
    response = send_file(
        path, mimetype=sniff_content_type(head), etag=key, max_age=_IMMUTABLE_S, conditional=True
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = f"public, max-age={_IMMUTABLE_S}, immutable"
    return response
