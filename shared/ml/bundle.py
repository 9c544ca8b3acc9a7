"""The model bundle: what ``MODEL_DIR`` holds, checked before any model is built.

Layout::

    MODEL_DIR/
      manifest.json              categories, top/bottom groups, sizes, threshold, provenance
      detector/config.yaml       Detectron2 config, self-contained (no _BASE_), 13 classes
      detector/model_final.pth   {"model": state_dict}, loadable with torch.load(weights_only=True)
      embedder/backbone.weights.h5   Keras ResNet50 (include_top=False, pooling='avg') weights

A bundle without a detector (``"detector": null``) gives whole-photo vectors only.

Import-light by contract: the web tier imports this module for ``/readyz``, so only json,
hashlib, pathlib and yaml are imported at module level; ``write_bundle`` imports torch (and
Detectron2 for configs with ``_BASE_``) inside the function.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.vocabulary import BOTTOM_IDS, CATEGORY_NAMES, NUM_CATEGORIES, TOP_IDS

MANIFEST_NAME = "manifest.json"
DETECTOR_CONFIG = "detector/config.yaml"
DETECTOR_WEIGHTS = "detector/model_final.pth"
EMBEDDER_WEIGHTS = "embedder/backbone.weights.h5"
MANIFEST_FORMAT = 1

DEFAULT_INPUT_SIZE = 224
DEFAULT_SCORE_THRESHOLD = 0.55
# 'random' embedder weights are for tests and smoke runs; a fixed seed makes them reproducible.
RANDOM_EMBEDDER_SEED = 1234
NAMED_EMBEDDER_WEIGHTS = ("imagenet", "random")
MODEL_VERSION_CHARS = 16

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class BundleError(Exception):
    """A model bundle (or the embedder weights setting) that cannot be used, and why."""


@dataclass(frozen=True)
class Bundle:
    root: Path | None
    model_version: str
    has_detector: bool
    detector_config: Path | None
    detector_weights: Path | None
    # A .weights.h5 path, 'imagenet' or 'random'.
    embedder_weights: str
    input_size: int
    detector_test_size: int | None
    score_threshold: float
    categories: list[str] = field(hash=False, compare=False)
    top_ids: tuple[int, ...] = TOP_IDS
    bottom_ids: tuple[int, ...] = BOTTOM_IDS
    manifest: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    embedder_seed: int = RANDOM_EMBEDDER_SEED

    @property
    def mode(self) -> str:
        return "crops+full" if self.has_detector else "full_only"


@dataclass(frozen=True)
class BundleStatus:
    ok: bool
    model_dir: str | None
    model_version: str | None = None
    detector: bool = False
    embedder_weights: str | None = None
    error: str | None = None

    @property
    def mode(self) -> str | None:
        if not self.ok:
            return None
        return "crops+full" if self.detector else "full_only"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model_dir": self.model_dir,
            "model_version": self.model_version,
            "detector": self.detector,
            "mode": self.mode,
            "embedder_weights": self.embedder_weights,
            "error": self.error,
        }


# ---------------------------------------------------------------- file hashing

# (path, size, mtime_ns) -> sha256: /readyz and get_pipeline() ask often; weights are big.
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    _hash_cache[key] = value
    return value


# ---------------------------------------------------------------- validation helpers


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"model bundle {root}: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"model bundle {root}: {MANIFEST_NAME} is not valid JSON: {exc}"
        ) from None
    if not isinstance(manifest, dict):
        raise BundleError(f"model bundle {root}: {MANIFEST_NAME} must be a JSON object")
    return manifest


def _check_categories(where: str, categories: Any) -> list[str]:
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise BundleError(f"{where}: 'categories' must be a list of names")
    if len(categories) != NUM_CATEGORIES:
        raise BundleError(
            f"{where}: {len(categories)} categories; the detector needs the "
            f"{NUM_CATEGORIES} DeepFashion2 categories"
        )
    return list(categories)


def _check_group(where: str, name: str, ids: Any) -> tuple[int, ...]:
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and 1 <= i <= NUM_CATEGORIES for i in ids
    ):
        raise BundleError(f"{where}: group '{name}' must list category ids 1..{NUM_CATEGORIES}")
    return tuple(ids)


def _config_num_classes(config: Mapping[str, Any]) -> Any:
    model = config.get("MODEL")
    heads = model.get("ROI_HEADS") if isinstance(model, Mapping) else None
    if not isinstance(heads, Mapping):
        heads = {}
    # Detectron2's default is 80 (COCO): a config that does not say 13 is not ours.
    return heads.get("NUM_CLASSES", 80)


def check_detector_config(path: Path) -> dict[str, Any]:
    """Parse a bundle's detector config and check it describes a 13-class detector."""
    where = f"detector config {path}"
    if not path.is_file():
        raise BundleError(f"{where} is missing")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BundleError(f"{where} is not readable YAML: {exc}") from None
    if not isinstance(config, dict):
        raise BundleError(f"{where} is not a YAML mapping")
    if "_BASE_" in config:
        raise BundleError(f"{where} uses _BASE_; a bundle's config must be self-contained")
    num_classes = _config_num_classes(config)
    if num_classes != NUM_CATEGORIES:
        raise BundleError(
            f"{where}: MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}, expected {NUM_CATEGORIES}"
        )
    return config


def _check_weights_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise BundleError(f"{what} {path} is missing")
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise BundleError(f"{what} {path} cannot be read: {exc}") from None
    if not head:
        raise BundleError(f"{what} {path} is empty")
    if what.startswith("embedder") and head != _HDF5_SIGNATURE:
        raise BundleError(f"{what} {path} is not an HDF5 (.weights.h5) file")


def _resolve_embedder(spec: str, base: Path | None, source: str) -> str:
    if spec in NAMED_EMBEDDER_WEIGHTS:
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.name.endswith(".weights.h5"):
        raise BundleError(
            f"embedder weights {path} (from {source}): expected 'imagenet', 'random' or a "
            "Keras .weights.h5 file"
        )
    _check_weights_file(path, "embedder weights")
    return str(path)


def _model_version(parts: Mapping[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:MODEL_VERSION_CHARS]


def _positive_int(where: str, name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BundleError(f"{where}: {name} must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------- loading


def _build_bundle(
    model_dir: Path | None,
    embedder_override: str | None,
    score_override: float | None,
    test_size_override: int | None,
    input_size_override: int | None,
) -> Bundle:
    manifest: dict[str, Any] = {}
    categories = list(CATEGORY_NAMES)
    top_ids, bottom_ids = TOP_IDS, BOTTOM_IDS
    detector_config = detector_weights = None
    manifest_test_size = None
    manifest_embedder: str | None = None
    manifest_input_size = None
    manifest_threshold = None
    root = None

    if model_dir is not None:
        root = Path(model_dir).expanduser()
        where = f"model bundle {root}"
        if not root.is_dir():
            raise BundleError(f"{where}: not a directory")
        manifest = _read_manifest(root)
        categories = _check_categories(where, manifest.get("categories", list(CATEGORY_NAMES)))
        groups = manifest.get("groups") or {}
        top_ids = _check_group(where, "top", groups.get("top", list(TOP_IDS)))
        bottom_ids = _check_group(where, "bottom", groups.get("bottom", list(BOTTOM_IDS)))
        if set(top_ids) & set(bottom_ids):
            raise BundleError(f"{where}: a category cannot be both a top and a bottom")
        detector = manifest.get("detector")
        if detector is not None:
            if not isinstance(detector, dict):
                raise BundleError(f"{where}: 'detector' must be an object or null")
            detector_config = root / detector.get("config", DETECTOR_CONFIG)
            detector_weights = root / detector.get("weights", DETECTOR_WEIGHTS)
            check_detector_config(detector_config)
            _check_weights_file(detector_weights, "detector weights")
            manifest_test_size = _positive_int(
                where, "detector.test_size", detector.get("test_size")
            )
        embedder = manifest.get("embedder") or {}
        manifest_embedder = embedder.get("weights")
        manifest_input_size = _positive_int(
            where, "embedder.input_size", embedder.get("input_size")
        )
        manifest_threshold = manifest.get("score_threshold")

    if embedder_override:
        embedder_weights = _resolve_embedder(embedder_override, None, "EMBEDDER_WEIGHTS")
    elif manifest_embedder:
        embedder_weights = _resolve_embedder(manifest_embedder, root, f"{root}/{MANIFEST_NAME}")
    elif root is None:
        raise BundleError(
            "no MODEL_DIR and no EMBEDDER_WEIGHTS: set EMBEDDER_WEIGHTS to 'imagenet', 'random' "
            "or a .weights.h5 file (whole-photo vectors only), or MODEL_DIR to a bundle"
        )
    else:
        raise BundleError(f"model bundle {root}: the manifest names no embedder weights")

    input_size = _positive_int("settings", "embedder_input_size", input_size_override) or (
        manifest_input_size or DEFAULT_INPUT_SIZE
    )
    test_size = _positive_int("settings", "detector_test_size", test_size_override) or (
        manifest_test_size
    )
    threshold = score_override if score_override is not None else manifest_threshold
    threshold = DEFAULT_SCORE_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise BundleError(f"score threshold {threshold} is outside 0..1")

    has_detector = detector_config is not None
    version_parts: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "categories": categories,
        "top": list(top_ids),
        "bottom": list(bottom_ids),
        "input_size": input_size,
        "embedder": (
            embedder_weights
            if embedder_weights in NAMED_EMBEDDER_WEIGHTS
            else file_sha256(Path(embedder_weights))
        ),
        "embedder_seed": RANDOM_EMBEDDER_SEED if embedder_weights == "random" else None,
    }
    if has_detector:
        assert detector_config is not None and detector_weights is not None
        version_parts.update(
            detector_config=file_sha256(detector_config),
            detector_weights=file_sha256(detector_weights),
            test_size=test_size,
            score_threshold=threshold,
        )
    return Bundle(
        root=root,
        model_version=_model_version(version_parts),
        has_detector=has_detector,
        detector_config=detector_config,
        detector_weights=detector_weights,
        embedder_weights=embedder_weights,
        input_size=input_size,
        detector_test_size=test_size if has_detector else None,
        score_threshold=threshold,
        categories=categories,
        top_ids=top_ids,
        bottom_ids=bottom_ids,
        manifest=manifest,
    )


def load_bundle(settings: Any) -> Bundle:
    """The bundle ``settings`` describe, validated; raises :class:`BundleError`.

    ``settings.model_dir`` None means no detector (whole-photo vectors) and then
    ``settings.embedder_weights`` is required. ``embedder_weights``, ``score_threshold``,
    ``detector_test_size`` and ``embedder_input_size`` override the manifest, and all of them
    go into ``model_version``.
    """
    return _build_bundle(
        getattr(settings, "model_dir", None),
        getattr(settings, "embedder_weights", None),
        getattr(settings, "score_threshold", None),
        getattr(settings, "detector_test_size", None),
        getattr(settings, "embedder_input_size", None),
    )


def inspect_bundle(settings: Any) -> BundleStatus:
    """What /readyz reports about the bundle; never raises."""
    model_dir = getattr(settings, "model_dir", None)
    shown_dir = str(model_dir) if model_dir is not None else None
    try:
        bundle = load_bundle(settings)
    except Exception as exc:  # a readiness probe reports every failure, whatever its type
        message = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
        return BundleStatus(ok=False, model_dir=shown_dir, error=message)
    return BundleStatus(
        ok=True,
        model_dir=shown_dir,
        model_version=bundle.model_version,
        detector=bundle.has_detector,
        embedder_weights=bundle.embedder_weights,
    )


# ---------------------------------------------------------------- writing


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
        except Exception as exc:
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

    detector_entry = None
    if detector_config is not None:
        import torch

        (out / "detector").mkdir(exist_ok=True)
        _write_detector_config(detector_config, out / DETECTOR_CONFIG)
        check_detector_config(out / DETECTOR_CONFIG)
        torch.save({"model": _model_state(detector_weights)}, out / DETECTOR_WEIGHTS)
        detector_entry = {
            "config": DETECTOR_CONFIG,
            "weights": DETECTOR_WEIGHTS,
            "test_size": detector_test_size,
            "architecture": "detectron2 GeneralizedRCNN (see config.yaml)",
        }

    embedder_spec = str(embedder_weights)
    if embedder_spec not in NAMED_EMBEDDER_WEIGHTS:
        source = Path(embedder_spec)
        _resolve_embedder(str(source), None, "write_bundle")
        (out / "embedder").mkdir(exist_ok=True)
        shutil.copyfile(source, out / EMBEDDER_WEIGHTS)
        embedder_spec = EMBEDDER_WEIGHTS

    manifest = {
        "format": MANIFEST_FORMAT,
        "categories": list(CATEGORY_NAMES),
        "groups": {"top": list(TOP_IDS), "bottom": list(BOTTOM_IDS)},
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
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return _build_bundle(out, None, None, None, None)
