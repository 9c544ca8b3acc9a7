"""Write trained models into a model bundle, keeping what the bundle already holds.

The detector and the embedder are trained by separate commands, in either order, into the same
``--bundle`` folder: each command replaces its own part and keeps the other part (and its
provenance) from the existing manifest. The writing itself is ``shared.ml.bundle.write_bundle``,
so a bundle made here is exactly what the workers load.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER_WEIGHTS = "imagenet"


class BundleWriteError(Exception):
    """The target bundle folder holds something we cannot merge with."""


def _existing_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = bundle_dir / "manifest.json"
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
) -> Any:
    """Write the given parts into ``bundle_dir``, keeping the parts not given; returns the Bundle.

    Without an embedder given or already in the bundle, the manifest names ``'imagenet'`` (what
    the article fine-tunes from); a worker can override it with ``EMBEDDER_WEIGHTS``.
    """
    from shared.ml.bundle import DEFAULT_INPUT_SIZE, DEFAULT_SCORE_THRESHOLD, write_bundle

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
            if old_weights in ("imagenet", "random"):
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
