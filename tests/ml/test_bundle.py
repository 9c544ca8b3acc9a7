"""Bundle loading and validation: the errors an operator sees for a broken MODEL_DIR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.ml.bundle import (
    BundleError,
    inspect_bundle,
    load_bundle,
)
from shared.vocabulary import CATEGORY_NAMES
from tests.ml.helpers import ml_settings

ROOT = Path(__file__).resolve().parents[2]
HDF5 = b"\x89HDF\r\n\x1a\n" + b"\0" * 64


def fake_bundle(
    root: Path,
    *,
    categories=None,
    num_classes=13,
    detector=True,
    embedder: str | None = "embedder/backbone.weights.h5",
) -> Path:
    """A bundle with the right layout whose weight files are stand-ins (validation only)."""
    (root / "embedder").mkdir(parents=True, exist_ok=True)
    (root / "embedder" / "backbone.weights.h5").write_bytes(HDF5)
    manifest = {
        "format": 1,
        "categories": list(CATEGORY_NAMES) if categories is None else categories,
        "groups": {"top": [1, 2, 3, 4, 5, 6, 10, 11, 12, 13], "bottom": [7, 8, 9]},
        "score_threshold": 0.55,
        "detector": None,
        "embedder": {"weights": embedder, "input_size": 96},
        "provenance": {"trained_on": "synthetic"},
    }
    if detector:
        (root / "detector").mkdir(exist_ok=True)
        config = {
            "MODEL": {
                "META_ARCHITECTURE": "GeneralizedRCNN",
                "ROI_HEADS": {"NUM_CLASSES": num_classes},
            }
        }
        (root / "detector" / "config.yaml").write_text(yaml.safe_dump(config))
        (root / "detector" / "model_final.pth").write_bytes(b"stand-in weights")
        manifest["detector"] = {
            "config": "detector/config.yaml",
            "weights": "detector/model_final.pth",
            "test_size": 256,
        }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_a_complete_bundle_loads_with_its_manifest_values(tmp_path: Path) -> None:
    bundle = load_bundle(ml_settings(fake_bundle(tmp_path)))
    assert bundle.has_detector and bundle.mode == "crops+full"
    assert bundle.input_size == 96 and bundle.detector_test_size == 256
    assert bundle.score_threshold == 0.55
    assert bundle.embedder_weights == str(tmp_path / "embedder" / "backbone.weights.h5")
    assert bundle.manifest["provenance"] == {"trained_on": "synthetic"}


def test_model_version_is_pinned_for_given_files_and_settings(tmp_path: Path) -> None:
    # Stored vectors are tagged with model_version: the same bundle must hash alike across
    # releases, or every catalogue would look stale after an upgrade. The stand-in files and
    # manifests here are fixed bytes, and folder paths do not enter the hash.
    with_detector = load_bundle(ml_settings(fake_bundle(tmp_path / "a")))
    whole_photo = load_bundle(ml_settings(fake_bundle(tmp_path / "b", detector=False)))
    no_bundle = load_bundle(ml_settings(None, embedder_weights="random"))
    assert (with_detector.model_version, whole_photo.model_version, no_bundle.model_version) == (
        "a696cf234b5f0668",
        "07ce62b3c8484e37",
        "55dbfbd9541285cb",
    )


def test_model_version_changes_with_files_and_settings(tmp_path: Path) -> None:
    root = fake_bundle(tmp_path)
    base = load_bundle(ml_settings(root)).model_version
    assert load_bundle(ml_settings(root)).model_version == base
    assert load_bundle(ml_settings(root, score_threshold=0.7)).model_version != base
    assert load_bundle(ml_settings(root, detector_test_size=512)).model_version != base
    assert load_bundle(ml_settings(root, embedder_input_size=224)).model_version != base
    assert load_bundle(ml_settings(root, embedder_weights="random")).model_version != base
    (root / "detector" / "model_final.pth").write_bytes(b"retrained weights")
    assert load_bundle(ml_settings(root)).model_version != base


def test_settings_override_the_manifest(tmp_path: Path) -> None:
    bundle = load_bundle(
        ml_settings(
            fake_bundle(tmp_path),
            score_threshold=0.8,
            detector_test_size=320,
            embedder_input_size=128,
            embedder_weights="random",
        )
    )
    assert (bundle.score_threshold, bundle.detector_test_size, bundle.input_size) == (0.8, 320, 128)
    assert bundle.embedder_weights == "random"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda r: (r / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda r: (r / "detector" / "model_final.pth").unlink(), "model_final.pth is missing"),
        (lambda r: (r / "detector" / "config.yaml").unlink(), "config.yaml is missing"),
        (
            lambda r: (r / "embedder" / "backbone.weights.h5").unlink(),
            "backbone.weights.h5 is missing",
        ),
        (lambda r: (r / "embedder" / "backbone.weights.h5").write_bytes(b"garbage"), "not an HDF5"),
        (lambda r: (r / "detector" / "config.yaml").write_text("_BASE_: x.yaml\n"), "_BASE_"),
    ],
)
def test_broken_bundles_are_clear_errors(tmp_path: Path, breakage, message: str) -> None:
    root = fake_bundle(tmp_path)
    breakage(root)
    with pytest.raises(BundleError, match=message):
        load_bundle(ml_settings(root))
    status = inspect_bundle(ml_settings(root)).as_dict()
    assert status["ok"] is False and message.split()[0] in status["error"]


def test_a_config_without_13_classes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="NUM_CLASSES is 80, expected 13"):
        load_bundle(ml_settings(fake_bundle(tmp_path, num_classes=80)))


def test_a_manifest_with_the_wrong_category_count_is_refused(tmp_path: Path) -> None:
    root = fake_bundle(tmp_path, categories=list(CATEGORY_NAMES[:12]))
    with pytest.raises(BundleError, match="12 categories"):
        load_bundle(ml_settings(root))


def test_no_model_dir_means_whole_photo_only_and_needs_embedder_weights(tmp_path: Path) -> None:
    bundle = load_bundle(ml_settings(None, embedder_weights="random"))
    assert not bundle.has_detector and bundle.mode == "full_only"
    status = inspect_bundle(ml_settings(None, embedder_weights="random")).as_dict()
    assert status["ok"] and status["mode"] == "full_only" and status["detector"] is False
    with pytest.raises(BundleError, match="EMBEDDER_WEIGHTS"):
        load_bundle(ml_settings(None))
    missing = tmp_path / "nowhere.weights.h5"
    with pytest.raises(BundleError, match=str(missing)):
        load_bundle(ml_settings(None, embedder_weights=str(missing)))


def test_a_bundle_without_detector_is_reported_as_full_only(tmp_path: Path) -> None:
    status = inspect_bundle(ml_settings(fake_bundle(tmp_path, detector=False))).as_dict()
    assert status == {
        "ok": True,
        "model_dir": str(tmp_path),
        "model_version": status["model_version"],
        "detector": False,
        "mode": "full_only",
        "embedder_weights": str(tmp_path / "embedder" / "backbone.weights.h5"),
        "error": None,
    }


def test_the_bundle_module_stays_import_light() -> None:
    code = (
        "import sys, shared.ml.bundle, shared.ml.pipeline; "
        "print(sorted(m for m in ('torch', 'keras', 'tensorflow', 'detectron2', 'cv2') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
