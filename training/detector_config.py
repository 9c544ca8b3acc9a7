"""Detectron2 configs for training the garment detector: the article's settings and presets.

The article (step 2) fine-tunes ``COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml`` from the COCO
model zoo weights with the solver settings in :data:`ARTICLE_SETTINGS`. That config freezes the
backbone's BatchNorm statistics, which only works when starting from pretrained weights: from
random weights it diverges in a few iterations (docs/architecture.md#ml-stack-facts). The
``tiny-gn`` preset swaps in a ResNet-18 with GroupNorm everywhere and small images, which trains
from scratch on a CPU; the tests and the demo use it.

Detectron2 is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.vocabulary import CATEGORY_NAMES

DEFAULT_BASE_CONFIG = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"
ZOO_WEIGHTS = "zoo"

# The article's step 2, verbatim.
ARTICLE_SETTINGS: dict[str, Any] = {
    "SOLVER.IMS_PER_BATCH": 4,
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.MAX_ITER": 1500,
    "SOLVER.STEPS": (1000, 1500),
    "SOLVER.GAMMA": 0.05,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
    "MODEL.ROI_HEADS.NUM_CLASSES": len(CATEGORY_NAMES),
    "TEST.EVAL_PERIOD": 500,
}

# Keys applied on top of ARTICLE_SETTINGS by each preset.
PRESETS: dict[str, dict[str, Any]] = {
    "article": {},
    # ResNet-18 + FPN with GroupNorm and no frozen stage: trains from random weights.
    "tiny-gn": {
        "MODEL.RESNETS.DEPTH": 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,  # required by detectron2 for R18/R34
        "MODEL.RESNETS.NORM": "GN",
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "MODEL.FPN.NORM": "GN",
        "MODEL.BACKBONE.FREEZE_AT": 0,
        # Narrow FPN and box head: the heads, not the ResNet-18, take most of a CPU iteration.
        # 128/256 -> 64/128 measured 0.33 instead of 0.59 s per iteration (2 cores, 160 px,
        # 4 photos), and the demo detector after 450 iterations found tops and bottoms as well
        # or better (presence right 95%/97% and 92%/95% vs 93%/92% and 92%/92%; 2026-11-30).
        # GroupNorm's 32 groups still divide 64.
        "MODEL.FPN.OUT_CHANNELS": 64,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 128,
        "INPUT.MIN_SIZE_TRAIN": (160,),
        "INPUT.MAX_SIZE_TRAIN": 256,
        "INPUT.MIN_SIZE_TEST": 160,
        "INPUT.MAX_SIZE_TEST": 256,
        # Small images: fewer proposals are plenty and much faster on a CPU.
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 600,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 300,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": 300,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
        # GroupNorm from scratch tolerates (and needs) a larger rate and a short warm-up.
        "SOLVER.BASE_LR": 0.02,
        "SOLVER.WARMUP_ITERS": 50,
        "SOLVER.MAX_ITER": 300,
        "SOLVER.STEPS": (240,),
        "SOLVER.GAMMA": 0.1,
        "SOLVER.IMS_PER_BATCH": 4,
        "DATALOADER.NUM_WORKERS": 0,
        "TEST.EVAL_PERIOD": 0,
    },
}


class ConfigError(ValueError):
    """A bad preset, base config or override, reported without a traceback."""


def parse_opts(opts: Sequence[str]) -> list[str]:
    """Check ``KEY VALUE KEY VALUE ...`` pairs (detectron2's ``merge_from_list`` format)."""
    items = list(opts)
    if len(items) % 2:
        raise ConfigError(f"--opts needs KEY VALUE pairs, got an odd count: {items}")
    return items


def base_config_path(base_config: str) -> str:
    """A model zoo name (``COCO-Detection/...yaml``) or a path to a config file."""
    path = Path(base_config)
    if path.is_file():
        return str(path)
    from detectron2 import model_zoo

    try:
        return model_zoo.get_config_file(base_config)
    except RuntimeError as exc:
        raise ConfigError(f"{base_config}: neither a file nor a model zoo config") from exc


def _as_opts(settings: Mapping[str, Any]) -> list[Any]:
    opts: list[Any] = []
    for key, value in settings.items():
        opts += [key, value]
    return opts


def build_config(
    *,
    base_config: str = DEFAULT_BASE_CONFIG,
    preset: str = "article",
    train_datasets: Sequence[str] = (),
    test_datasets: Sequence[str] = (),
    weights: str | None = None,
    device: str = "cpu",
    output_dir: Path | str | None = None,
    opts: Sequence[str] = (),
) -> Any:
    """A frozen detectron2 ``CfgNode``: base file, article settings, preset, then ``opts``.

    ``weights``: a checkpoint file, :data:`ZOO_WEIGHTS` for the base config's model zoo
    checkpoint (needs the internet at training time), or None/"" for random initialisation.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(base_config_path(base_config))
    settings = {**ARTICLE_SETTINGS, **PRESETS[preset]}
    # yacs only takes values of the type the key already holds; tuples for list keys are fine.
    cfg.merge_from_list(_as_opts(settings))
    cfg.DATASETS.TRAIN = tuple(train_datasets)
    cfg.DATASETS.TEST = tuple(test_datasets)
    if not test_datasets:
        cfg.TEST.EVAL_PERIOD = 0
    if weights == ZOO_WEIGHTS:
        try:
            cfg.MODEL.WEIGHTS = model_zoo.get_checkpoint_url(base_config)
        except RuntimeError as exc:
            raise ConfigError(f"{base_config}: no model zoo checkpoint for this config") from exc
    elif weights:
        if not Path(weights).is_file():
            raise ConfigError(f"{weights}: initial weights file not found")
        cfg.MODEL.WEIGHTS = str(weights)
    else:
        cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    try:
        cfg.merge_from_list(parse_opts(opts))
    except (KeyError, ValueError, AssertionError) as exc:
        raise ConfigError(f"--opts {' '.join(map(str, opts))}: {exc}") from exc
    cfg.freeze()
    return cfg


def inference_config(cfg: Any, weights_name: str = "model_final.pth") -> Any:
    """A copy of a training config fit for a bundle: no datasets, weights next to the yaml."""
    out = cfg.clone()
    out.defrost()
    out.DATASETS.TRAIN = ()
    out.DATASETS.TEST = ()
    out.MODEL.WEIGHTS = weights_name
    # The worker picks its own device; a bundle trained on a GPU must load on a CPU.
    out.MODEL.DEVICE = "cpu"
    out.freeze()
    return out
