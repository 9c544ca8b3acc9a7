"""Crop-and-embed: photos in; per photo a full, top and bottom vector with box, label and score.

What workers call. Models load once per process, on first use (never at import, never in a
Celery parent before fork: CUDA cannot be re-initialised in a forked child). A photo that
cannot be decoded gets its own error while the rest of its batch is processed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from shared.images import ImageRejected, decode_rgb
from shared.ml import resolve_device
from shared.ml.bundle import Bundle, load_bundle
from shared.ml.preprocess import Box, crop
from shared.vocabulary import CROP_KINDS, VectorKind, category_name

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.ml.detector import Detector
    from shared.ml.embedder import Embedder

log = logging.getLogger(__name__)


@dataclass
class Crop:
    kind: str  # "top" or "bottom"
    box: Box  # x1, y1, x2, y2 in image pixels, clipped to the image
    label: int  # 1..13
    label_name: str
    score: float


@dataclass
class ImageResult:
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # full/top/bottom: (2048,) f32
    crops: dict[str, Crop] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    error: ImageRejected | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Pipeline:
    """Detector (when the bundle has one) then embedder, over batches of photos."""

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        self.bundle = bundle
        self.settings = settings
        self._detector: Detector | None = None
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return self.bundle.model_version

    @property
    def has_detector(self) -> bool:
        return self.bundle.has_detector

    @property
    def detector(self) -> Detector | None:
        """The loaded Detector (None before :meth:`load` or without one in the bundle)."""
        return self._detector

    @property
    def embedder(self) -> Embedder | None:
        """The loaded Embedder (None before :meth:`load`)."""
        return self._embedder

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def load(self) -> None:
        """Build the models now (a worker may call it once its process is up)."""
        with self._lock:
            if self._embedder is not None:
                return
            from shared.ml.detector import Detector
            from shared.ml.embedder import Embedder

            device = resolve_device(self.settings.device)
            backend = self.settings.keras_backend
            extra = {
                "model_version": self.model_version,
                "mode": self.bundle.mode,
                "device": device,
            }
            if self.bundle.has_detector:
                detector = Detector.from_bundle(self.bundle, device)
            else:
                detector = None
                log.warning("model bundle has no detector: whole-photo vectors only", extra=extra)
            embedder = Embedder.from_bundle(self.bundle, device, backend=backend)
            self._detector, self._embedder = detector, embedder
            log.info("models loaded", extra={**extra, "keras_backend": embedder.backend})

    def process(self, images: Sequence[bytes]) -> list[ImageResult]:
        """One result per photo, in order; undecodable photos carry ``error`` and no vectors."""
        max_pixels = self.settings.max_image_pixels
        results: list[ImageResult | None] = []
        decoded: list[np.ndarray] = []
        for data in images:
            try:
                decoded.append(decode_rgb(data, max_pixels))
                results.append(None)
            except ImageRejected as exc:
                results.append(ImageResult(error=exc))
        processed = iter(self.process_arrays(decoded))
        return [r if r is not None else next(processed) for r in results]

    def process_arrays(self, rgb_arrays: Sequence[np.ndarray]) -> list[ImageResult]:
        """Like :meth:`process` for already decoded RGB ``uint8`` arrays (H, W, 3)."""
        for array in rgb_arrays:
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(
                    f"expected RGB uint8 arrays (H, W, 3), got {array.dtype} {array.shape}"
                )
        if not rgb_arrays:
            return []
        self.load()
        detector, embedder = self._detector, self._embedder
        if embedder is None:  # load() sets it or raises; never unset afterwards
            raise RuntimeError("the pipeline's models are not loaded")
        results = [ImageResult(width=a.shape[1], height=a.shape[0]) for a in rgb_arrays]
        # Every picture to embed (whole photos and crops) goes through the embedder together.
        pictures: list[np.ndarray] = []
        owners: list[tuple[ImageResult, VectorKind]] = []
        detections = (
            detector.detect(rgb_arrays) if detector is not None else [None] * len(rgb_arrays)
        )
        for array, result, found in zip(rgb_arrays, results, detections, strict=True):
            pictures.append(array)
            owners.append((result, VectorKind.FULL))
            if found is None:
                continue
            for kind in CROP_KINDS:
                best = found.best.get(kind)
                if best is None:
                    continue
                result.crops[kind] = Crop(
                    kind, best.box, best.label, category_name(best.label), best.score
                )
                pictures.append(crop(array, best.box))
                owners.append((result, kind))
        vectors = embedder.embed(pictures)
        for (result, kind), vector in zip(owners, vectors, strict=True):
            result.vectors[kind] = vector
        return results


_pipelines: dict[tuple[str, str, str], Pipeline] = {}
_pipelines_lock = threading.Lock()


def get_pipeline(settings: Settings | None = None) -> Pipeline:
    """The process's pipeline for ``settings`` (default: the process settings).

    Cached by model version: a new bundle (or new settings that change the vectors) gets a new
    pipeline and the old one is dropped, so one process holds one set of models. Models load on
    first :meth:`Pipeline.process`, not here.
    """
    if settings is None:
        from shared.config import get_settings

        settings = get_settings()
    bundle = load_bundle(settings)
    key = (
        bundle.model_version,
        settings.device,
        settings.keras_backend,
    )
    with _pipelines_lock:
        pipeline = _pipelines.get(key)
        if pipeline is None:
            _pipelines.clear()
            pipeline = _pipelines[key] = Pipeline(bundle, settings)
        return pipeline
