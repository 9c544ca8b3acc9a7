"""Detector and embedder training write into one bundle, in either order, keeping each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import load_settings
from training.bundle_writer import update_bundle


def fake_keras_weights(path: Path, value: float) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        handle["w"] = [value]
    return path


@pytest.mark.ml
def test_embedder_then_detector_then_embedder_keeps_the_other_part(tmp_path: Path) -> None:
    from detectron2.modeling import build_model

    from shared.ml.bundle import file_sha256, load_bundle
    from training.detector_config import build_config, inference_config

    bundle_dir = tmp_path / "bundle"
    first = fake_keras_weights(tmp_path / "a.weights.h5", 1.0)
    update_bundle(
        bundle_dir, embedder_weights=first, input_size=96, provenance={"embedder": {"run": 1}}
    )

    cfg = build_config(preset="tiny-gn")
    update_bundle(
        bundle_dir,
        detector_config=inference_config(cfg),
        detector_weights=build_model(cfg),
        score_threshold=0.3,
        provenance={"detector": {"run": 2}},
    )
    bundle = load_bundle(load_settings({"model_dir": bundle_dir}, environ={}))
    assert bundle.has_detector and bundle.input_size == 96 and bundle.score_threshold == 0.3
    assert file_sha256(Path(bundle.embedder_weights)) == file_sha256(first)
    assert bundle.manifest["provenance"] == {"embedder": {"run": 1}, "detector": {"run": 2}}
    detector_hash = file_sha256(bundle.detector_weights)

    second = fake_keras_weights(tmp_path / "b.weights.h5", 2.0)
    update_bundle(bundle_dir, embedder_weights=second, provenance={"embedder": {"run": 3}})
    again = load_bundle(load_settings({"model_dir": bundle_dir}, environ={}))
    assert again.has_detector and file_sha256(again.detector_weights) == detector_hash
    assert file_sha256(Path(again.embedder_weights)) == file_sha256(second)
    assert again.score_threshold == 0.3 and again.input_size == 96
    assert again.manifest["provenance"]["embedder"] == {"run": 3}
    assert again.model_version != bundle.model_version


def test_a_new_bundle_without_an_embedder_names_imagenet(tmp_path: Path) -> None:
    bundle = update_bundle(tmp_path / "bundle")
    assert bundle.embedder_weights == "imagenet" and not bundle.has_detector
