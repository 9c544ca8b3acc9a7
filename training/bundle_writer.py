"""Write model bundles: a new one from its parts, or trained parts into an existing one.

``write_bundle`` writes a whole bundle (the layout :mod:`shared.ml.bundle` documents and reads)
and returns it loaded back, so a bundle made here is exactly what the workers load.
``update_bundle`` serves training: the detector and the embedder are trained by separate
commands, in either order, into the same ``--bundle`` folder; each command replaces its own part
and keeps the other part (and its provenance) from the existing manifest.

Frameworks are imported inside the functions that need them: torch to save detector weights,
Detectron2 only to resolve a config's ``_BASE_`` chain.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shared.ml.bundle import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_SCORE_THRESHOLD,
    DETECTOR_CONFIG,
    DETECTOR_WEIGHTS,
    EMBEDDER_WEIGHTS,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    NAMED_EMBEDDER_WEIGHTS,
    Bundle,
    BundleError,
    check_detector_config,
    open_bundle,
    resolve_embedder,
)
from shared.vocabulary import BOTTOM_IDS, CATEGORY_NAMES, TOP_IDS, VectorKind

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER_WEIGHTS = "imagenet"


class BundleWriteError(Exception):
    """The target bundle folder holds something we cannot merge with."""


# ---------------------------------------------------------------- a new bundle


def _write_detector_config(source: Any, target: Path) -> None:
    if hasattr(source, "dump"):  # a Detectron2 CfgNode
        target.write_text(source.dump(), encoding="utf-8")
        return
    path = Path(source)
    if not path.is_file():
        raise BundleError(f"detector config {path} is missing")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(loaded, dict) and "_BASE_" in loaded:
        # The bundle must stand alone: resolve the inheritance chain once, here.
        from detectron2.config import get_cfg

        cfg = get_cfg()
        cfg.merge_from_file(str(path))
        target.write_text(cfg.dump(), encoding="utf-8")
    else:
        shutil.copyfile(path, target)


def _model_state(source: Any) -> dict[str, Any]:
    import torch

    if isinstance(source, torch.nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise BundleError(f"detector weights {path} are missing")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001  (any unpickling failure means the same to the user)
            raise BundleError(
                f"detector weights {path} do not load with torch.load(weights_only=True): {exc}; "
                "pass the model's state_dict instead"
            ) from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise BundleError("detector weights must be a state_dict of tensors (or {'model': ...})")
    return {str(k): v.detach().cpu() for k, v in state.items()}


def _write_detector(
    out: Path, config: Any, weights: Any, test_size: int | None
) -> dict[str, Any] | None:
    """The detector's files in ``out`` (config checked before weights are saved); its manifest
    entry, or None for a bundle without a detector."""
    if config is None:
        return None
    import torch

    (out / "detector").mkdir(exist_ok=True)
    _write_detector_config(config, out / DETECTOR_CONFIG)
    check_detector_config(out / DETECTOR_CONFIG)
    torch.save({"model": _model_state(weights)}, out / DETECTOR_WEIGHTS)
    return {
        "config": DETECTOR_CONFIG,
        "weights": DETECTOR_WEIGHTS,
        "test_size": test_size,
        "architecture": "detectron2 GeneralizedRCNN (see config.yaml)",
    }


def _write_embedder(out: Path, weights: str | Path) -> str:
    """A named weights setting as is, or a checked ``.weights.h5`` copied into ``out``; what the
    manifest names."""
    spec = str(weights)
    if spec in NAMED_EMBEDDER_WEIGHTS:
        return spec
    resolve_embedder(spec, None, "write_bundle")
    (out / "embedder").mkdir(exist_ok=True)
    shutil.copyfile(Path(spec), out / EMBEDDER_WEIGHTS)
    return EMBEDDER_WEIGHTS


def _manifest(
    detector_entry: dict[str, Any] | None,
    embedder_spec: str,
    input_size: int,
    score_threshold: float,
    provenance: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "categories": list(CATEGORY_NAMES),
        "groups": {VectorKind.TOP: list(TOP_IDS), VectorKind.BOTTOM: list(BOTTOM_IDS)},
        "score_threshold": float(score_threshold),
        "detector": detector_entry,
        "embedder": {
            "weights": embedder_spec,
            "input_size": int(input_size),
            "architecture": "keras.applications.ResNet50(include_top=False, pooling='avg')",
            "preprocess": "RGB, aspect-preserving resize + pad, resnet50.preprocess_input",
        },
        "provenance": dict(provenance or {}),
    }


def write_bundle(
    out_dir: Path | str,
    *,
    detector_config: Any = None,
    detector_weights: Any = None,
    embedder_weights: str | Path | None = None,
    input_size: int = DEFAULT_INPUT_SIZE,
    detector_test_size: int | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    provenance: Mapping[str, Any] | None = None,
) -> Bundle:
    """Write a bundle to ``out_dir`` and return it loaded back (validated).

    ``detector_config``: a YAML path (``_BASE_`` chains are resolved into one file) or a CfgNode.
    ``detector_weights``: a checkpoint path, a state_dict or an ``nn.Module``; only the model
    state is kept, as ``{"model": state_dict}``, so it loads with ``torch.load(weights_only=True)``
    (training checkpoints also hold optimizer and scheduler state we do not ship).
    ``embedder_weights``: a Keras ``.weights.h5`` file (copied), ``'imagenet'`` or ``'random'``.
    """
    if (detector_config is None) != (detector_weights is None):
        raise BundleError("detector_config and detector_weights go together: give both or neither")
    if embedder_weights is None:
        raise BundleError(
            "embedder_weights is required: a .weights.h5 file, 'imagenet' or 'random'"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    detector_entry = _write_detector(out, detector_config, detector_weights, detector_test_size)
    embedder_spec = _write_embedder(out, embedder_weights)
    manifest = _manifest(detector_entry, embedder_spec, input_size, score_threshold, provenance)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return open_bundle(out)


# ---------------------------------------------------------------- trained parts into a bundle


def _existing_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleWriteError(f"{path}: existing manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleWriteError(f"{path}: existing manifest is not a JSON object")
    return manifest


def _stage(source: Path, staging: Path) -> Path:
    # write_bundle copies into the bundle; copying a file onto itself fails, so copy out first.
    if not source.is_file():
        raise BundleWriteError(f"{source}: listed in the existing manifest but missing")
    target = staging / source.parent.name / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def update_bundle(
    bundle_dir: Path | str,
    *,
    detector_config: Any = None,
    detector_weights: Any = None,
    embedder_weights: str | Path | None = None,
    input_size: int | None = None,
    score_threshold: float | None = None,
    provenance: Mapping[str, Any] | None = None,
    zip_bundle: bool = False,
) -> Bundle:
    """Write the given parts into ``bundle_dir``, keeping the parts not given; returns the Bundle.

    Without an embedder given or already in the bundle, the manifest names ``'imagenet'`` (what
    the article fine-tunes from); a worker can override it with ``EMBEDDER_WEIGHTS``.
    """
    bundle_dir = Path(bundle_dir)
    manifest = _existing_manifest(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        staging = Path(tmp)
        old_detector = manifest.get("detector")
        if detector_config is None and isinstance(old_detector, dict):
            detector_config = _stage(bundle_dir / old_detector["config"], staging)
            detector_weights = _stage(bundle_dir / old_detector["weights"], staging)
        old_embedder = manifest.get("embedder") or {}
        if embedder_weights is None:
            old_weights = old_embedder.get("weights")
            if old_weights in NAMED_EMBEDDER_WEIGHTS:
                embedder_weights = old_weights
            elif old_weights:
                embedder_weights = _stage(bundle_dir / old_weights, staging)
            else:
                embedder_weights = DEFAULT_EMBEDDER_WEIGHTS
        if input_size is None:
            input_size = int(old_embedder.get("input_size") or DEFAULT_INPUT_SIZE)
        if score_threshold is None:
            score_threshold = float(manifest.get("score_threshold", DEFAULT_SCORE_THRESHOLD))
        merged_provenance = {**(manifest.get("provenance") or {}), **(provenance or {})}
        bundle = write_bundle(
            bundle_dir,
            detector_config=detector_config,
            detector_weights=detector_weights,
            embedder_weights=embedder_weights,
            input_size=input_size,
            score_threshold=score_threshold,
            provenance=merged_provenance,
        )
    if zip_bundle:
        archive = shutil.make_archive(str(bundle_dir), "zip", root_dir=bundle_dir)
        log.info("bundle archive written: %s", archive)
    return bundle
