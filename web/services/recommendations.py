"""You may also like: an item's neighbours (a lookup) and a photo's (searched by a worker).

Web processes hold no vectors. An item's answer comes from its neighbour lists, corrected
against PostgreSQL (shared.search.reader); where the lists cannot answer exactly (the item
itself changed seconds ago, or too many of its neighbours did), a ``query`` worker searches its
matrices. An uploaded photo is embedded and searched by a ``query`` worker. Both paths return
the API's document ``{"results": {kind: [Hit]}, "missing": {kind: reason}, ...}``, and refuse
with web.services.errors (the API answers them as JSON errors, the pages as pages).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, NotRequired, TypedDict

from flask import Flask, current_app, g

from shared import task_names
from shared.images import ImageRejected, probe
from shared.queueing import QUEUE_QUERY
from shared.replies import SUCCESS, wait_reply
from shared.search import filtered, reader
from shared.search.filters import FilterSpec
from shared.search.reader import ItemRef, Neighbour
from shared.versions.presence import live_workers
from shared.versions.routing import ServingPointer, versioned
from shared.vocabulary import CROP_KINDS, ItemStatus, VectorKind
from web.links import media_urls
from web.lists_pointer import ListsPointer
from web.resources import broker_redis, db, db_reads, search_client, settings
from web.services.errors import Conflict, Invalid, NotFound, Unavailable

RETRY_AFTER_S = "2"
ITEM_MISSING: dict[str, str] = {
    VectorKind.TOP: "no top garment was detected in this item's photo",
    VectorKind.BOTTOM: "no bottom garment was detected in this item's photo",
    VectorKind.FULL: "this item has no whole-photo vector",
}
PHOTO_MISSING: dict[str, str] = {
    VectorKind.TOP: "no top garment was detected in the uploaded photo",
    VectorKind.BOTTOM: "no bottom garment was detected in the uploaded photo",
    VectorKind.FULL: "the uploaded photo has no whole-photo vector",
}


class Hit(TypedDict):
    """One recommended item. ``crop_url`` is on top and bottom hits only: the matched item's
    crop of that kind (None when it has none); whole-photo hits have no such key."""

    sku: str
    distance: float
    image_url: str | None
    crop_url: NotRequired[str | None]


class Recommendations(TypedDict):
    """The API's answer, for an item (``sku``) or an uploaded photo (``query``)."""

    sku: NotRequired[str]
    model_version: str | None
    query: NotRequired[dict[str, Any]]
    results: dict[str, list[Hit]]
    missing: dict[str, str]


def unavailable(code: str, message: str) -> Unavailable:
    return Unavailable(code, message, retry_after=RETRY_AFTER_S)


def lists_pointer(app: Flask | None = None) -> ListsPointer:
    app = app or current_app
    pointer = app.extensions.get("visrec_lists_pointer")
    if pointer is None or pointer.settings is not app.config["SETTINGS"]:
        pointer = app.extensions["visrec_lists_pointer"] = ListsPointer(app.config["SETTINGS"])
    return pointer


def serving_pointer(app: Flask | None = None) -> ServingPointer:
    app = app or current_app
    pointer: ServingPointer = app.extensions.setdefault("visrec_serving", ServingPointer())
    return pointer


def _item_search_version(version: str | None) -> str | None:
    """Whose query queue an item search goes to: ``version``'s workers while one is live (they
    hold its matrices already), else any query worker. It reads stored vectors only, so a worker
    of another version (or none running this one: a version kept in step without workers of
    its own) answers it just as exactly."""
    if version is not None and live_workers(settings(), [version], QUEUE_QUERY).get(version):
        return version
    return None


def _ask_worker(task: str, kwargs: dict[str, Any], version: str | None) -> dict[str, Any]:
    """Run a ``query`` task on a worker of ``version`` (any, when None) and wait for its answer;
    Unavailable when no worker answers in time."""
    timeout = settings().query_timeout_s
    queue = versioned(QUEUE_QUERY, version)
    # The answer comes on the request's reply list (shared.replies), so Celery stores no result
    # and subscribes to nothing. expires: a worker that only gets to it after we gave up skips
    # it instead of wasting time.
    sent = search_client().send_task(
        task, kwargs=kwargs, queue=queue, expires=timeout, ignore_result=True
    )
    outcome = wait_reply(broker_redis(), sent.id, time.monotonic() + timeout)
    if outcome is None:
        raise unavailable("query_timeout", f"No worker answered within {timeout:g} s.")
    if outcome["status"] != SUCCESS:
        raise unavailable("query_failed", "The search failed on the worker; retry later.")
    answer: dict[str, Any] = outcome["result"]
    return answer


def _documents(
    found: Mapping[str, Sequence[Neighbour]], version: str | None, known: reader.Shown | None = None
) -> dict[str, list[Hit]]:
    shown = reader.shown(
        db(), version, {kind: [n.item_id for n in hits] for kind, hits in found.items()}, known
    )
    url = media_urls()
    out: dict[str, list[Hit]] = {}
    for kind, hits in found.items():
        out[kind] = []
        for n in hits:
            label = shown.labels.get(n.item_id)
            if label is None:
                continue  # deleted between the search and this read: simply left out
            hit = Hit(sku=label.sku, distance=n.distance, image_url=url(label.media_key))
            if kind in CROP_KINDS:
                hit["crop_url"] = url(shown.crops.get((kind, n.item_id)))
            out[kind].append(hit)
    return out


def _from_worker(payload: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, list[Neighbour]]:
    return {
        kind: [Neighbour(int(item_id), float(distance)) for item_id, distance in hits]
        for kind, hits in payload.items()
    }


def _not_embedded(item: ItemRef) -> Conflict:
    detail = {"status": item.status}
    if item.status == ItemStatus.FAILED:
        return Conflict(
            "item_not_embedded", f"Item {item.sku!r} failed ingestion: {item.error}", detail
        )
    return Conflict(
        "item_not_embedded",
        f"Item {item.sku!r} has no vectors yet (status {item.status}); retry once ingestion is"
        " done.",
        detail,
    )


def recommend_for_item(
    sku: str, k: int, kinds: Sequence[str], spec: FilterSpec | None = None
) -> Recommendations:
    """The k nearest other items per kind that pass ``spec`` (filters and families); NotFound
    for an unknown SKU, Conflict for an item without vectors yet, Unavailable when a worker had
    to search and did not answer."""
    spec = spec or FilterSpec()
    session = db_reads()
    item = reader.find_item(session, sku)
    if item is None:
        raise NotFound("item_not_found", f"No item with SKU {sku!r}.")
    if item.version is None:
        raise _not_embedded(item)
    pointer = lists_pointer()
    generation = pointer.generation()
    found = reader.item_neighbours(
        session,
        pointer.client(),
        generation,
        item,
        kinds,
        k,
        on_cache_error=pointer.cache_failed,
        on_cache_miss=pointer.lists_missing,
    )
    g.lists_generation = found.generation
    neighbours = found.neighbours
    if not spec.empty:
        neighbours = filtered.walk(session, item, found.prefixes, spec, k)
    waiting = [kind for kind, hits in neighbours.items() if hits is None]
    answered: dict[str, list[Neighbour]] = {
        kind: hits for kind, hits in neighbours.items() if hits is not None
    }
    if waiting:
        task: dict[str, Any] = {
            "item_id": item.id,
            "version": item.version,
            "kinds": waiting,
            "k": k,
        }
        if not spec.empty:
            task["filters"] = spec.to_payload()
        answer = _ask_worker(task_names.SEARCH_ITEM, task, _item_search_version(item.version))
        if "error" in answer:
            raise NotFound("item_not_found", f"No item with SKU {sku!r}.")
        answered.update(_from_worker(answer["results"]))
    documents = _documents(answered, item.version, found.shown)
    results = {kind: documents.get(kind, []) for kind in kinds}
    missing = {kind: ITEM_MISSING[kind] for kind in kinds if kind not in item.kinds}
    return Recommendations(sku=sku, model_version=item.version, results=results, missing=missing)


def read_photo(stream: IO[bytes]) -> bytes:
    """An uploaded photo's bytes, checked to be an image within the limits (Invalid
    ``image_rejected`` otherwise, its ``reason`` in the details). Reads at most one byte past
    the limit, so a huge upload is refused without being read whole."""
    limit = settings().max_upload_bytes
    data = stream.read(limit + 1)
    if not data:
        raise Invalid("image_rejected", "The uploaded file is empty.", {"reason": "empty"})
    if len(data) > limit:
        raise Invalid(
            "image_rejected", f"The photo is larger than {limit} bytes.", {"reason": "too_large"}
        )
    try:
        probe(data, settings().max_image_pixels)
    except ImageRejected as exc:
        raise Invalid("image_rejected", exc.message, {"reason": exc.reason}) from exc
    return data


def recommend_for_photo(
    data: bytes, k: int, kinds: Sequence[str], spec: FilterSpec | None = None
) -> Recommendations:
    """Search the catalogue with a shopper's photo, among the items that pass ``spec`` (its
    ``exclude_same`` has no item to compare with and is ignored). The photo is never stored: it
    travels to the worker inside the task message and is gone once the answer is back."""
    task: dict[str, Any] = {
        "image": base64.b64encode(data).decode("ascii"),
        "kinds": list(kinds),
        "k": k,
    }
    if spec is not None and not spec.empty:
        task["filters"] = spec.to_payload()
    # The serving version's workers embed and search the photo (a worker embeds with its own
    # bundle only); on an empty system, any worker.
    answer = _ask_worker(task_names.SEARCH_PHOTO, task, serving_pointer().get(db()))
    if "error" in answer:
        error = answer["error"]
        raise Invalid("image_rejected", error["message"], {"reason": error["reason"]})
    documents = _documents(_from_worker(answer["results"]), answer["model_version"])
    present = set(answer.get("kinds", []))
    return Recommendations(
        model_version=answer["model_version"],
        query={
            "crops": answer.get("crops", {}),
            "width": answer.get("width"),
            "height": answer.get("height"),
        },
        results={kind: documents.get(kind, []) for kind in kinds},
        missing={kind: PHOTO_MISSING[kind] for kind in kinds if kind not in present},
    )
