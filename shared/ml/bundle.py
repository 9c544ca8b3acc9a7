"""The model bundle: what ``MODEL_DIR`` holds, checked before any model is built.

Layout::

    MODEL_DIR/
      manifest.json              categories, top/bottom groups, sizes, threshold, provenance
      detector/config.yaml       Detectron2 config, self-contained (no _BASE_), 13 classes
      detector/model_final.pth   {"model": state_dict}, loadable with torch.load(weights_only=True)
      embedder/backbone.weights.h5   Keras ResNet50 (include_top=False, pooling='avg') weights

A bundle without a detector (``"detector": null``) gives whole-photo vectors only.

This module only reads and checks bundles; writing one (which needs torch, and Detectron2 for
configs with ``_BASE_``) is :mod:`training.bundle_writer`'s job.

Import-light by contract: the web tier imports this module for ``/readyz``, so only json,
hashlib, pathlib and yaml are imported at module level.
"""

from __future__ import annotations

import hashlib
import json
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


def resolve_embedder(spec: str, base: Path | None, source: str) -> str:
    """A named weights setting as is, or the checked path of a ``.weights.h5`` file (relative
    paths are taken from ``base``); ``source`` names where ``spec`` came from in errors."""
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


@dataclass(frozen=True)
class _FolderParts:
    """What a bundle folder's manifest says, each part checked; the defaults without a folder."""

    root: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    categories: list[str] = field(default_factory=lambda: list(CATEGORY_NAMES))
    top_ids: tuple[int, ...] = TOP_IDS
    bottom_ids: tuple[int, ...] = BOTTOM_IDS
    detector_config: Path | None = None
    detector_weights: Path | None = None
    test_size: int | None = None
    embedder: str | None = None
    input_size: int | None = None
    threshold: Any = None


def _read_groups(where: str, manifest: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
    groups = manifest.get("groups") or {}
    top_ids = _check_group(where, "top", groups.get("top", list(TOP_IDS)))
    bottom_ids = _check_group(where, "bottom", groups.get("bottom", list(BOTTOM_IDS)))
    if set(top_ids) & set(bottom_ids):
        raise BundleError(f"{where}: a category cannot be both a top and a bottom")
    return top_ids, bottom_ids


def _read_detector(
    where: str, root: Path, entry: Any
) -> tuple[Path | None, Path | None, int | None]:
    """(config, weights, test_size) of the manifest's detector entry, files checked."""
    if entry is None:
        return None, None, None
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: 'detector' must be an object or null")
    config = root / entry.get("config", DETECTOR_CONFIG)
    weights = root / entry.get("weights", DETECTOR_WEIGHTS)
    check_detector_config(config)
    _check_weights_file(weights, "detector weights")
    return config, weights, _positive_int(where, "detector.test_size", entry.get("test_size"))


def _read_folder(model_dir: Path) -> _FolderParts:
    root = Path(model_dir).expanduser()
    where = f"model bundle {root}"
    if not root.is_dir():
        raise BundleError(f"{where}: not a directory")
    manifest = _read_manifest(root)
    categories = _check_categories(where, manifest.get("categories", list(CATEGORY_NAMES)))
    top_ids, bottom_ids = _read_groups(where, manifest)
    config, weights, test_size = _read_detector(where, root, manifest.get("detector"))
    embedder = manifest.get("embedder") or {}
    return _FolderParts(
        root=root,
        manifest=manifest,
        categories=categories,
        top_ids=top_ids,
        bottom_ids=bottom_ids,
        detector_config=config,
        detector_weights=weights,
        test_size=test_size,
        embedder=embedder.get("weights"),
        input_size=_positive_int(where, "embedder.input_size", embedder.get("input_size")),
        threshold=manifest.get("score_threshold"),
    )


def _choose_embedder(override: str | None, parts: _FolderParts) -> str:
    """The settings' embedder weights, else the manifest's; one of them is required."""
    if override:
        return resolve_embedder(override, None, "EMBEDDER_WEIGHTS")
    if parts.embedder:
        return resolve_embedder(parts.embedder, parts.root, f"{parts.root}/{MANIFEST_NAME}")
    if parts.root is None:
        raise BundleError(
            "no MODEL_DIR and no EMBEDDER_WEIGHTS: set EMBEDDER_WEIGHTS to 'imagenet', 'random' "
            "or a .weights.h5 file (whole-photo vectors only), or MODEL_DIR to a bundle"
        )
    raise BundleError(f"model bundle {parts.root}: the manifest names no embedder weights")


def _choose_threshold(override: float | None, from_manifest: Any) -> float:
    threshold = override if override is not None else from_manifest
    threshold = DEFAULT_SCORE_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise BundleError(f"score threshold {threshold} is outside 0..1")
    return threshold


def _version_parts(
    parts: _FolderParts,
    embedder_weights: str,
    input_size: int,
    test_size: int | None,
    threshold: float,
) -> dict[str, Any]:
    """Everything that changes what the models compute; ``model_version`` hashes it, so its keys
    and values must stay as they are (stored vectors are tagged with that hash)."""
    version_parts: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "categories": parts.categories,
        "top": list(parts.top_ids),
        "bottom": list(parts.bottom_ids),
        "input_size": input_size,
        "embedder": (
            embedder_weights
            if embedder_weights in NAMED_EMBEDDER_WEIGHTS
            else file_sha256(Path(embedder_weights))
        ),
        "embedder_seed": RANDOM_EMBEDDER_SEED if embedder_weights == "random" else None,
    }
    if parts.detector_config is not None and parts.detector_weights is not None:
        version_parts.update(
            detector_config=file_sha256(parts.detector_config),
            detector_weights=file_sha256(parts.detector_weights),
            test_size=test_size,
            score_threshold=threshold,
        )
    return version_parts


def _build_bundle(
    model_dir: Path | None,
    embedder_override: str | None,
    score_override: float | None,
    test_size_override: int | None,
    input_size_override: int | None,
) -> Bundle:
    parts = _read_folder(model_dir) if model_dir is not None else _FolderParts()
    embedder_weights = _choose_embedder(embedder_override, parts)
    input_size = _positive_int("settings", "embedder_input_size", input_size_override) or (
        parts.input_size or DEFAULT_INPUT_SIZE
    )
    test_size = (
        _positive_int("settings", "detector_test_size", test_size_override) or parts.test_size
    )
    threshold = _choose_threshold(score_override, parts.threshold)
    has_detector = parts.detector_config is not None
    return Bundle(
        root=parts.root,
        model_version=_model_version(
            _version_parts(parts, embedder_weights, input_size, test_size, threshold)
        ),
        has_detector=has_detector,
        detector_config=parts.detector_config,
        detector_weights=parts.detector_weights,
        embedder_weights=embedder_weights,
        input_size=input_size,
        detector_test_size=test_size if has_detector else None,
        score_threshold=threshold,
        categories=parts.categories,
        top_ids=parts.top_ids,
        bottom_ids=parts.bottom_ids,
        manifest=parts.manifest,
    )


def open_bundle(model_dir: Path | str) -> Bundle:
    """The bundle in ``model_dir`` as its manifest describes it (no settings override it)."""
    return _build_bundle(Path(model_dir), None, None, None, None)


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
    except Exception as exc:  # noqa: BLE001  a readiness probe reports every failure, whatever its type
        message = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
        return BundleStatus(ok=False, model_dir=shown_dir, error=message)
    return BundleStatus(
        ok=True,
        model_dir=shown_dir,
        model_version=bundle.model_version,
        detector=bundle.has_detector,
        embedder_weights=bundle.embedder_weights,
    )
