"""The UI's single call site into the recommendation code: the very functions the JSON API
runs for ``GET /api/v1/items/<sku>/recommendations`` and ``POST /api/v1/recommendations``.

The pages never search on their own: a fix or a change in ranking shows up in the API and the
UI at once. Both functions return the API's document
``{"sku"?, "results": {kind: [{"sku", "distance", "image_url"}]}, "missing": {kind: reason}}``
and raise :class:`web.errors.ApiError` exactly when the API would answer with an error.
"""

from __future__ import annotations

from typing import Any

from werkzeug.datastructures import FileStorage

from shared.ml.categories import VECTOR_KINDS


def item_recommendations(sku: str, k: int) -> dict[str, Any]:
    from web.services import recommendations

    return recommendations.recommend_for_item(sku, k=k, kinds=VECTOR_KINDS)


def photo_recommendations(upload: FileStorage, k: int) -> tuple[bytes, dict[str, Any]]:
    """The photo's bytes (the page shows them back; nothing is stored) and the document."""
    from web.services import recommendations

    data = recommendations.read_upload(upload)
    return data, recommendations.recommend_for_photo(data, k=k, kinds=VECTOR_KINDS)
