"""Searches the web tier waits for (queue ``query``): an uploaded photo, or an item whose own
neighbour list is not ready yet. Both answer from this worker's matrices, so the web tier never
holds vectors.

Results are JSON-safe: per kind, ``[item_id, distance]`` pairs nearest first; the web tier adds
SKUs and image URLs. Problems with the photo are data (``{"error": {...}}``), not failures.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from typing_extensions import override

from shared import task_names
from shared.config import get_settings
from shared.redis_clients import redis_client
from shared.replies import SUCCESS, push_reply
from shared.search.filters import from_payload
from shared.vectors import encode
from workers.search.queries import search_item as search_item_now
from workers.search.queries import search_vectors
from workers.tasks.base import TransientPolicy, VisrecTask
from workers.tasks.registration import task

log = logging.getLogger(__name__)


class RepliedTask(VisrecTask):
    """A search a web thread is waiting for: its outcome goes onto the request's reply list
    (shared.replies), where that thread's blocking pop takes it.

    No monitoring events (received, started, succeeded: three broker publishes a search): a
    solo query worker answers the pages it serves one at a time, so what it spends per search
    is what every waiting page waits for. Flower does not list searches; the log has each."""

    send_events = False

    @override
    def after_return(self, status: str, retval: Any, task_id: str, *_: Any) -> None:
        result = retval if status == SUCCESS else None
        push_reply(redis_client(get_settings().redis_broker_url), task_id, status, result)


def _ranked(results: dict[str, list[tuple[int, float]]]) -> dict[str, list[list[float]]]:
    return {
        kind: [[item_id, distance] for item_id, distance in hits] for kind, hits in results.items()
    }


# No retries: the web tier waits QUERY_TIMEOUT_S for the answer and says 503 after that; a
# retry after backoff would answer nobody.
@task(task_names.SEARCH_PHOTO, base=RepliedTask, on_transient=TransientPolicy.FAIL)
def search_photo(
    image: str, kinds: list[str], k: int, filters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Crop and embed a shopper's photo (base64 in the message: never stored), then search
    among the items that pass ``filters`` (shared.search.filters.FilterSpec.to_payload)."""
    from shared.ml.pipeline import get_pipeline  # frameworks load in the worker, on first use

    settings = get_settings()
    data = base64.b64decode(image)
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
    queries = {kind: vector for kind, vector in result.vectors.items() if kind in kinds}
    found = search_vectors(settings, pipeline.model_version, queries, k, from_payload(filters))
    log.info(
        "photo searched",
        extra={
            "bytes": len(data),
            "kinds": sorted(result.vectors),
            "model_version": pipeline.model_version,
        },
    )
    return {
        "model_version": pipeline.model_version,
        "kinds": sorted(result.vectors),
        "results": _ranked(found),
        # What was searched with (little-endian float32, base64): lets a caller check the answer.
        "vectors": {
            kind: base64.b64encode(encode(v)).decode("ascii") for kind, v in queries.items()
        },
        "crops": crops,
        "width": result.width,
        "height": result.height,
    }


@task(task_names.SEARCH_ITEM, base=RepliedTask, on_transient=TransientPolicy.FAIL)
def search_item(
    item_id: int, version: str, kinds: list[str], k: int, filters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The exact neighbours of an item from its vectors now, among the items that pass
    ``filters`` (its list is being folded, or could not answer the filters)."""
    found = search_item_now(get_settings(), item_id, version, kinds, k, from_payload(filters))
    if found is None:
        return {"error": {"reason": "item_gone", "message": "The item was deleted."}}
    return {"results": _ranked(found)}
