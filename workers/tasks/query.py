"""Embed one uploaded photo for ``POST /api/v1/recommendations`` (queue ``query``).

The web tier waits for the answer, so the result is JSON-safe: each vector as base64 of its
little-endian float32 bytes, the crops that were cut, and the model version that made them
(catalogue vectors of another version are never compared with it).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from shared import task_names
from shared.config import get_settings
from shared.media import MediaStore
from shared.vectors import encode
from workers.celery_app import app

log = logging.getLogger(__name__)


def encode_vector(vector: Any) -> str:
    return base64.b64encode(encode(vector)).decode("ascii")


@app.task(name=task_names.EMBED_QUERY)
def embed_query(media_key: str) -> dict[str, Any]:
    """Crop and embed the photo stored under ``media_key``; errors about the photo are data."""
    from shared.ml.pipeline import get_pipeline  # frameworks load in the worker, on first use

    settings = get_settings()
    try:
        data = MediaStore(settings.media_root).read(media_key)
    except (KeyError, FileNotFoundError):
        return {"error": {"reason": "media_missing", "message": "The uploaded photo is gone."}}
    pipeline = get_pipeline(settings)
    result = pipeline.process([data])[0]
    if result.error is not None:
        return {"error": {"reason": result.error.reason, "message": str(result.error)}}
    crops = {
        kind: {
            "box": [float(v) for v in crop.box],
            "label": int(crop.label),
            "label_name": crop.label_name,
            "score": float(crop.score),
        }
        for kind, crop in result.crops.items()
    }
    log.info(
        "query embedded",
        extra={
            "media_key": media_key,
            "kinds": sorted(result.vectors),
            "model_version": pipeline.model_version,
        },
    )
    return {
        "model_version": pipeline.model_version,
        "vectors": {kind: encode_vector(v) for kind, v in result.vectors.items()},
        "crops": crops,
        "width": result.width,
        "height": result.height,
    }
