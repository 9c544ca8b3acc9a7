"""``GET /api/v1/items/<sku>`` (an item, its image and its vectors), ``DELETE`` and ``PATCH``
of its attributes (API key), and ``PATCH /api/v1/items``: many items' attributes at once.

Anyone may read an item, but only what a shop page shows (SKU, status, image, size, attributes,
kinds). Where its bytes came from (a URL that may carry a presigned token, a server path), its
hashes, vectors and error details are for API-key holders.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from web.api.schemas import (
    AttributesPatchSchema,
    ItemSchema,
    ItemsPatchedSchema,
    ItemsPatchSchema,
)
from web.auth import caller_has_key, require_api_key
from web.links import media_url
from web.services import attributes, items

blp = Blueprint("items", __name__, url_prefix="/api/v1", description="Catalogue items")


@blp.route("/items/<string:sku>")
class ItemBySku(MethodView):
    @blp.doc(security=[{}, {"bearer": []}])
    @blp.response(200, ItemSchema)
    @blp.alt_response(401, description="A key was sent and it is not valid")
    @blp.alt_response(404, description="Unknown SKU")
    def get(self, sku: str) -> Any:
        """An item: status, image URL, attributes and which vectors it has (boxes, labels).

        Without an API key only the fields a shop page needs are returned (sku, status,
        image_url, width, height, attributes, kinds); with one, every field.
        """
        if caller_has_key():
            return _document(sku)
        # Encoded straight away: the body is already what ItemSchema dumps for these fields.
        return current_app.json.response(items.public_item(sku))

    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(AttributesPatchSchema)
    @blp.response(200, ItemSchema)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(404, description="Unknown SKU")
    @require_api_key
    def patch(self, body: dict[str, Any], sku: str) -> dict[str, Any]:
        """Change an item's attributes (a JSON merge patch); no photo, vector or list changes.

        Recommendations filter on the new attributes from the next request on.
        """
        attributes.patch_item_attributes(sku, body["attributes"])
        return _document(sku)

    @blp.doc(security=[{"bearer": []}])
    @blp.response(204)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(404, description="Unknown SKU")
    @require_api_key
    def delete(self, sku: str) -> None:
        """Remove an item and its vectors; recommendations stop returning it."""
        items.delete_item(sku)


@blp.route("/items")
class Items(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(ItemsPatchSchema)
    @blp.response(200, ItemsPatchedSchema)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(413, description="The body is larger than MAX_REQUEST_BYTES")
    @require_api_key
    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change many items' attributes at once (a stock feed): one JSON merge patch each.

        Unknown SKUs are reported per item (``not_found``); the others are applied, all in one
        transaction. No photo, vector or list changes.
        """
        patches = body["items"]
        outcomes = attributes.patch_attributes([(p["sku"], p["attributes"]) for p in patches])
        updated = sum(1 for outcome in outcomes if outcome.status == "updated")
        return {
            "updated": updated,
            "not_found": len(outcomes) - updated,
            "items": [{"sku": o.sku, "status": o.status} for o in outcomes],
        }


def _document(sku: str) -> dict[str, Any]:
    detail = items.item_detail(sku)
    item = detail.item
    return {
        "sku": item.sku,
        "status": item.status,
        "error": item.error,
        "image_url": media_url(item.media_key),
        "image_sha256": item.image_sha256,
        "byte_size": item.byte_size,
        "width": item.width,
        "height": item.height,
        "source_url": item.source_url,
        "source_path": item.source_path,
        "attributes": item.attributes or {},
        "kinds": detail.kinds,
        "vectors": [asdict(vector) for vector in detail.vectors],
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    }
