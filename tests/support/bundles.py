"""Random-initialised but deployable model bundles for tests.

The detector is configured as deployed (Faster R-CNN FPN, GroupNorm R18 variant that trains from
scratch, 13 classes) with weights saved from a random ``build_model``; the embedder is ResNet50
with seeded random weights saved to ``.weights.h5``. Building both takes seconds; files are
written once per process and hard-linked (or copied) for later calls with the same arguments.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.ml.bundle import Bundle, open_bundle
from training.bundle_writer import write_bundle

_made: dict[tuple[Any, ...], Path] = {}
_scratch: Path | None = None


def detector_cfg(test_size: int = 128, depth: int = 18) -> Any:
    """The deployed detector config (GroupNorm Faster R-CNN FPN), 13 DeepFashion2 classes."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 13
    cfg.INPUT.MIN_SIZE_TEST = test_size
    cfg.INPUT.MAX_SIZE_TEST = round(test_size * 1333 / 800)
    return cfg


def random_detector_state(cfg: Any, seed: int) -> dict[str, Any]:
    import torch
    from detectron2.modeling import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    return model.state_dict()


def random_embedder_weights(path: Path, seed: int, input_size: int) -> Path:
    """ResNet50 (no top, avg pool) with seeded random weights, saved as a .weights.h5 file."""
    from shared.ml.embedder import build_backbone

    os.environ.setdefault("KERAS_BACKEND", "torch")
    model = build_backbone("random", (input_size, input_size, 3), seed=seed)
    model.save_weights(str(path))
    return path


def _scratch_dir() -> Path:
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="visrec-test-bundles-"))
        # Bundles are ~200 MB; the copies handed out are hard links or copies, so they outlive
        # this directory.
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return _scratch


def _link_tree(source: Path, target: Path) -> None:
    for item in source.rglob("*"):
        dest = target / item.relative_to(source)
        if item.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(item, dest)
        except OSError:
            shutil.copy2(item, dest)


def make_test_bundle(
    path: Path | str,
    *,
    detector: bool = True,
    input_size: int = 64,
    test_size: int = 128,
    seed: int = 0,
) -> Bundle:
    """Write a deployable random bundle to ``path`` (created) and return it loaded."""
    target = Path(path)
    key = (detector, input_size, test_size, seed)
    cached = _made.get(key)
    if cached is None:
        if "keras" not in sys.modules:
            os.environ.setdefault("KERAS_BACKEND", "torch")
        # torch/detectron2 before keras (TF + triton segfault): docs/architecture.md#keras-on-torch.
        import torch  # noqa: F401

        cached = _scratch_dir() / f"bundle-{len(_made)}"
        work = _scratch_dir() / f"parts-{len(_made)}"
        work.mkdir(parents=True)
        embedder = random_embedder_weights(work / "backbone.weights.h5", seed, input_size)
        kwargs: dict[str, Any] = {}
        if detector:
            cfg = detector_cfg(test_size)
            kwargs = {
                "detector_config": cfg,
                "detector_weights": random_detector_state(cfg, seed),
                "detector_test_size": test_size,
            }
        write_bundle(
            cached,
            embedder_weights=embedder,
            input_size=input_size,
            provenance={"kind": "random test bundle", "seed": seed},
            **kwargs,
        )
        shutil.rmtree(work, ignore_errors=True)
        _made[key] = cached
    target.mkdir(parents=True, exist_ok=True)
    _link_tree(cached, target)
    return open_bundle(target)
