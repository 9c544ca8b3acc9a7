"""The model run of a batch's photos, with a photo the models fail on kept from failing its
neighbours, and the garment crops of each embedded photo stored."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from shared.images import decode_rgb
from shared.vocabulary import VectorKind
from workers.errors import TRANSIENT_ERRORS
from workers.ingestion.crops import store_crops
from workers.ingestion.work import Embedded, Failed, PendingItem, StoredPhoto

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.media import MediaStore
    from shared.ml.pipeline import ImageResult

log = logging.getLogger(__name__)

# The exception is in the log; the person reading the job gets words, not internals.
_OUR_ERROR = Failed(
    "processing_error", "the photo could not be processed because of an error on our side"
)


class Models(Protocol):
    """What a batch needs of the model pipeline (shared.ml.pipeline.Pipeline)."""

    @property
    def model_version(self) -> str: ...

    def process(self, images: Sequence[bytes]) -> list[ImageResult]: ...


def _process_each(
    pipeline: Models, todo: Sequence[tuple[PendingItem, StoredPhoto]]
) -> list[ImageResult | Failed]:
    results: list[ImageResult | Failed] = []
    for item, photo in todo:
        try:
            results.extend(pipeline.process([photo.data]))
        except Exception:
            log.exception("photo failed in the model pipeline", extra={"sku": item.sku})
            results.append(_OUR_ERROR)
    return results


def _process(
    pipeline: Models, todo: Sequence[tuple[PendingItem, StoredPhoto]]
) -> list[ImageResult | Failed]:
    try:
        return list(pipeline.process([photo.data for _, photo in todo]))
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        # One poisoned photo must not fail its neighbours: retry one by one to isolate it.
        log.exception("batch inference failed; retrying photo by photo")
        return _process_each(pipeline, todo)


def _checked(result: ImageResult | Failed, photo: StoredPhoto) -> ImageResult | Failed:
    if isinstance(result, Failed):
        return Failed(result.reason, result.message, photo)
    if result.error is not None:
        return Failed(result.error.reason, result.error.message, photo)
    if VectorKind.FULL not in result.vectors:
        return Failed("processing_error", "the pipeline returned no whole-photo vector", photo)
    return result


def _store_crops(
    settings: Settings, media: MediaStore, photo: bytes, result: ImageResult
) -> dict[str, str]:
    """The photo's garment crops, stored before the commit that names them (media retention's
    grace period covers the bytes until then)."""
    if not result.crops:
        return {}
    # Decoded again rather than kept from the models: a batch holds no photo's pixels across
    # the models' work, and the backfill of older items cuts crops the same way.
    rgb = decode_rgb(photo, settings.max_image_pixels)
    boxes = {kind: crop.box for kind, crop in result.crops.items()}
    return store_crops(media, rgb, boxes, settings.crop_max_side)


def embed(
    settings: Settings,
    media: MediaStore,
    pipeline: Models,
    todo: Sequence[tuple[PendingItem, StoredPhoto]],
) -> list[Embedded | Failed]:
    """One outcome per photo of ``todo``, in order. Transient errors propagate: the batch is
    retried, not its photos failed."""
    if not todo:
        return []
    outcomes: list[Embedded | Failed] = []
    for (_, photo), raw in zip(todo, _process(pipeline, todo), strict=True):
        result = _checked(raw, photo)
        if isinstance(result, Failed):
            outcomes.append(result)
        else:
            crop_keys = _store_crops(settings, media, photo.data, result)
            outcomes.append(Embedded(photo, result, crop_keys))
    return outcomes
