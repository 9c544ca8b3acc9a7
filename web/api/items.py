"""``GET /api/v1/items/<sku>`` (an item, its image and its vectors) and ``DELETE`` (API key).

Anyone may read an item, but only what a shop page shows (SKU, status, image, size, attributes,
kinds). Where its bytes came from (a URL that may carry a presigned token, a server path), its
hashes, vectors and error details are for API-key holders.
"""

from __future__ import annotations

import logging
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from shared.ml.categories import category_name
from shared.models import Embedding, Item
from shared.search.scheduling import request_fold
from web.api.media import media_url
from web.api.schemas import ItemSchema
from web.auth import caller_has_key, require_api_key
from web.errors import ApiError
from web.resources import db, settings

log = logging.getLogger(__name__)

blp = Blueprint("items", __name__, url_prefix="/api/v1", description="Catalogue items")

_KIND_ORDER = {"full": 0, "top": 1, "bottom": 2}
PUBLIC_ITEM_FIELDS = ("sku", "status", "image_url", "width", "height", "attributes", "kinds")


def _item_or_404(sku: str) -> Item:
    item = db().scalars(select(Item).where(Item.sku == sku)).one_or_none()
    if item is None:
        raise ApiError(404, "item_not_found", f"No item has the SKU {sku!r}.")
    return item


def _label_name(label: int | None) -> str | None:
    if label is None:
        return None
    try:
        return category_name(label)
    except ValueError:
        return None


@blp.route("/items/<string:sku>")
class ItemBySku(MethodView):
    @blp.doc(security=[{}, {"bearer": []}])
    @blp.response(200, ItemSchema)
    @blp.alt_response(401, description="A key was sent and it is not valid")
    @blp.alt_response(404, description="Unknown SKU")
    def get(self, sku: str) -> dict[str, Any]:
        """An item: status, image URL, attributes and which vectors it has (boxes, labels).

        Without an API key only the fields a shop page needs are returned (sku, status,
        image_url, width, height, attributes, kinds); with one, every field.
        """
        full = caller_has_key()
        item = _item_or_404(sku)
        rows = db().scalars(select(Embedding).where(Embedding.item_id == item.id)).all()
        vectors = sorted(
            (
                {
                    "kind": e.kind,
                    "model_version": e.model_version,
                    "dim": e.dim,
                    "box": e.box,
                    "label": e.label,
                    "label_name": _label_name(e.label),
                    "score": e.score,
                }
                for e in rows
            ),
            key=lambda v: (_KIND_ORDER.get(v["kind"], 9), v["model_version"]),
        )
        document = {
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
            "kinds": list(dict.fromkeys(v["kind"] for v in vectors)),
            "vectors": vectors,
            "created_at": item.created_at,
            "updated_at": item.updated_at,
        }
        if full:
            return document
        return {name: document[name] for name in PUBLIC_ITEM_FIELDS}

    @blp.doc(security=[{"bearer": []}])
    @blp.response(204)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(404, description="Unknown SKU")
    @require_api_key
    def delete(self, sku: str) -> None:
        """Remove an item and its vectors; recommendations stop returning it."""
        session = db()
        item = _item_or_404(sku)
        session.delete(item)
        session.commit()
        log.info("item deleted", extra={"sku": sku})
        try:
            request_fold(settings(), reason=f"item {sku} deleted")
        except Exception:  # the delete stands and answers already skip it; a later fold tidies
            log.exception("could not schedule a fold of the neighbour lists", extra={"sku": sku})
