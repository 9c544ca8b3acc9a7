"""Garment detector: Detectron2's model (what DefaultPredictor wraps), run on batches of images.

The article built a new DefaultPredictor for every photo (config parse, model build, checkpoint
load each time) and ran one image at a time. Here the model is built once, images go through in
batches, and per image we keep the best top and the best bottom box, clipped to the image.

Grouping and best-crop choice (:func:`best_per_group`) are plain NumPy so they are testable
without a framework; Detectron2 and torch are imported inside :class:`Detector` only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.ml.bundle import Bundle, BundleError, check_detector_config
from shared.ml.preprocess import Box, clip_box
from shared.vocabulary import BOTTOM_IDS, DRESS_IDS, TOP_IDS, VectorKind, group_of

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Images per forward pass. On a GPU batching fills the device; on a CPU a batch of 8 photos at
# 800 px measured 40% slower per image than one at a time (the activations no longer fit the
# caches: bench/pipeline.py), so the CPU runs photos one by one.
DEFAULT_DETECTOR_BATCH = {"cpu": 1, "cuda": 8}


@dataclass(frozen=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in image pixels, clipped to the image
    label: int  # 1-based DeepFashion2 category id
    score: float


@dataclass
class ImageDetections:
    """Everything the detector found in one image (above the score threshold)."""

    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32, as predicted (may reach outside the image)
    labels: np.ndarray  # (n,) int64, 1-based
    scores: np.ndarray  # (n,) float32
    best: dict[str, Detection] = field(default_factory=dict)  # "top" / "bottom"

    @property
    def top(self) -> Detection | None:
        return self.best.get(VectorKind.TOP)

    @property
    def bottom(self) -> Detection | None:
        return self.best.get(VectorKind.BOTTOM)


# Share of one box's area inside the other above which the best top and the best bottom are
# taken for one garment seen twice: the lower half of a dress read as a skirt, the waistband of
# shorts read as a top. Real outfits overlap far less (a shirt and trousers meet at the waist; a
# coat leaves the trousers' legs below it).
SAME_GARMENT_OVERLAP = 0.8


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _inside_share(inner: Box, outer: Box) -> float:
    """How much of ``inner``'s area lies inside ``outer`` (0 for an empty box)."""
    area = _area(inner)
    if area <= 0.0:
        return 0.0
    overlap = (
        max(inner[0], outer[0]),
        max(inner[1], outer[1]),
        min(inner[2], outer[2]),
        min(inner[3], outer[3]),
    )
    return _area(overlap) / area


def one_garment_each(
    best: dict[str, Detection], overlap: float = SAME_GARMENT_OVERLAP
) -> dict[str, Detection]:
    """Drop the best top or bottom when it lies inside the other: one garment, two readings.

    The enclosing box is the garment (a dress holds the "skirt" it was also read as; shorts hold
    the "top" read off their waistband); when each holds the other, the higher score stays. A
    top other than a dress that holds a whole bottom is no outfit either, but which reading is
    right is not known from the boxes (the demo's detector reads whole shorts and skirts as a
    sling or vest): there too the higher score stays.
    """
    top, bottom = best.get(VectorKind.TOP), best.get(VectorKind.BOTTOM)
    if top is None or bottom is None:
        return best
    bottom_in_top = _inside_share(bottom.box, top.box) >= overlap
    top_in_bottom = _inside_share(top.box, bottom.box) >= overlap
    if bottom_in_top and top_in_bottom:
        drop = VectorKind.BOTTOM if top.score >= bottom.score else VectorKind.TOP
    elif bottom_in_top:
        is_dress = top.label in DRESS_IDS
        drop = VectorKind.BOTTOM if is_dress or top.score >= bottom.score else VectorKind.TOP
    elif top_in_bottom:
        drop = VectorKind.TOP
    else:
        return best
    return {group: found for group, found in best.items() if group != drop}


def best_per_group(
    boxes: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    width: int,
    height: int,
    *,
    score_threshold: float = 0.0,
    top_ids: tuple[int, ...] = TOP_IDS,
    bottom_ids: tuple[int, ...] = BOTTOM_IDS,
) -> dict[str, Detection]:
    """The highest-scoring top and bottom, boxes clipped; a box wholly outside is skipped; a
    top and bottom that are one garment (:func:`one_garment_each`) give one crop."""
    best: dict[str, Detection] = {}
    for box, label, score in zip(boxes, labels, scores, strict=True):
        score = float(score)
        group = group_of(int(label), top_ids, bottom_ids)
        if group is None or score < score_threshold:
            continue
        if group in best and best[group].score >= score:
            continue
        clipped = clip_box(box, width, height)
        if clipped is not None:
            best[group] = Detection(clipped, int(label), score)
    return one_garment_each(best)


def _max_size_for(test_size: int) -> int:
    # Detectron2's default pair is 800/1333: keep that ratio so wide photos scale alike.
    return max(test_size, round(test_size * 1333 / 800))


class Detector:
    """Detectron2 Faster R-CNN over the 13 DeepFashion2 classes, on CPU or CUDA."""

    def __init__(
        self,
        config_path: Path | str,
        weights_path: Path | str,
        *,
        score_threshold: float = 0.55,
        test_size: int | None = None,
        device: str = "cpu",
        top_ids: tuple[int, ...] = TOP_IDS,
        bottom_ids: tuple[int, ...] = BOTTOM_IDS,
        batch_size: int | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.weights_path = Path(weights_path)
        self.score_threshold = float(score_threshold)
        self.device = device
        self.top_ids = top_ids
        self.bottom_ids = bottom_ids
        if batch_size is None:
            batch_size = DEFAULT_DETECTOR_BATCH.get(device.split(":")[0], 1)
        self.batch_size = max(1, int(batch_size))
        check_detector_config(self.config_path)
        self.cfg = self._build_cfg(test_size)
        self.model = self._build_model()
        from detectron2.data import transforms as T

        self._resize = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MIN_SIZE_TEST],
            self.cfg.INPUT.MAX_SIZE_TEST,
        )
        self._bgr = self.cfg.INPUT.FORMAT == "BGR"

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, device: str = "cpu", *, batch_size: int | None = None
    ) -> Detector:
        config, weights = bundle.detector_config, bundle.detector_weights
        if not bundle.has_detector or config is None or weights is None:
            raise BundleError(f"model bundle {bundle.root} has no detector")
        return cls(
            config,
            weights,
            score_threshold=bundle.score_threshold,
            test_size=bundle.detector_test_size,
            device=device,
            top_ids=bundle.top_ids,
            bottom_ids=bundle.bottom_ids,
            batch_size=batch_size,
        )

    def _build_cfg(self, test_size: int | None) -> Any:
        from detectron2.config import get_cfg

        cfg = get_cfg()
        cfg.merge_from_file(str(self.config_path))
        cfg.MODEL.WEIGHTS = str(self.weights_path)
        cfg.MODEL.DEVICE = self.device
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = self.score_threshold
        if test_size is not None:
            cfg.INPUT.MIN_SIZE_TEST = int(test_size)
            cfg.INPUT.MAX_SIZE_TEST = _max_size_for(int(test_size))
        cfg.freeze()
        return cfg

    def _build_model(self) -> torch.nn.Module:
        import torch
        from detectron2.modeling import build_model

        model: torch.nn.Module = build_model(self.cfg)
        model.eval()
        try:
            checkpoint = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BundleError(
                f"detector weights {self.weights_path} cannot be loaded: {exc}"
            ) from exc
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise BundleError(f"detector weights {self.weights_path} hold no model state_dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        # Strict, unlike DetectionCheckpointer's warn-and-skip: a checkpoint for another
        # architecture or class count must fail here, not run with random heads.
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleError(
                f"detector weights {self.weights_path} do not match {self.config_path}: {exc}"
            ) from None
        if self.device == "cpu":
            # oneDNN's convolutions run about 15% faster on NHWC tensors (bench/pipeline.py).
            model = model.to(memory_format=torch.channels_last)
        return model

    def _inputs(self, rgb: np.ndarray) -> dict[str, torch.Tensor | int]:
        import torch

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
        height, width = rgb.shape[:2]
        image = rgb[:, :, ::-1] if self._bgr else rgb
        image = self._resize.get_transform(image).apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))
        return {"image": tensor, "height": height, "width": width}

    def detect(self, images: Sequence[np.ndarray]) -> list[ImageDetections]:
        """Per RGB ``uint8`` image (H, W, 3): its detections and best top/bottom."""
        import torch

        results: list[ImageDetections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            inputs = [self._inputs(image) for image in chunk]
            with torch.inference_mode():
                outputs = self.model(inputs)
            for image, output in zip(chunk, outputs, strict=True):
                results.append(self._collect(image, output["instances"].to("cpu")))
        return results

    def _collect(self, image: np.ndarray, instances: Any) -> ImageDetections:
        height, width = image.shape[:2]
        boxes = instances.pred_boxes.tensor.numpy().astype(np.float32)
        labels = instances.pred_classes.numpy().astype(np.int64) + 1
        scores = instances.scores.numpy().astype(np.float32)
        best = best_per_group(
            boxes,
            labels,
            scores,
            width,
            height,
            score_threshold=self.score_threshold,
            top_ids=self.top_ids,
            bottom_ids=self.bottom_ids,
        )
        return ImageDetections(width, height, boxes, labels, scores, best)
