"""Embedder fine-tuning: the article's ResNet50 recipe on the DeepFashion category layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.config import load_settings
from training import synthetic
from training.train_embedder import main

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


@pytest.fixture
def deepfashion(tmp_path: Path) -> Path:
    root = tmp_path / "deepfashion"
    synthetic.write_deepfashion(root, 16, size=SIZE, seed=0)
    return root


def keras_torch():
    from shared.ml.embedder import import_keras

    return import_keras("torch")


def fresh_resnet(keras, weights_file: Path | None = None):
    model = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=(SIZE, SIZE, 3)
    )
    if weights_file is not None:
        model.load_weights(str(weights_file))
    return model


def vector(model, pixels: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.asarray(model.predict_on_batch(pixels), dtype=np.float32)


def rewrite_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def first_image(root: Path) -> str:
    return (root / "Anno" / "list_category_img.txt").read_text().splitlines()[2].split()[0]


@pytest.mark.parametrize("problem", ["no_partition", "unknown_label", "bad_bbox", "no_image"])
def test_malformed_dataset_stops_with_an_error_naming_the_file(
    deepfashion: Path, tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = first_image(deepfashion)
    if problem == "no_partition":
        culprit = deepfashion / "Eval" / "list_eval_partition.txt"
        culprit.unlink()
    elif problem == "unknown_label":
        culprit = deepfashion / "Anno" / "list_category_img.txt"
        rewrite_line(culprit, 2, f"{name}  47")
    elif problem == "bad_bbox":
        culprit = deepfashion / "Anno" / "list_bbox.txt"
        rewrite_line(culprit, 2, f"{name}  10  20  x  40")
    else:
        culprit = deepfashion / name
        culprit.unlink()
    code = main(
        ["--data", str(deepfashion), "--output", str(tmp_path / "out"), "--weights", "random"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert str(culprit) in err
    if problem == "unknown_label":
        assert "unknown category label '47'" in err and "line 3" in err
    if problem == "bad_bbox":
        assert "line 3" in err
    assert not (tmp_path / "out" / "backbone.weights.h5").exists()


@pytest.mark.slow
@pytest.mark.ml
def test_one_short_epoch_lowers_the_loss_on_a_fixed_batch(deepfashion: Path) -> None:
    keras = keras_torch()
    from training.deepfashion import read_category_dataset
    from training.train_embedder import build_models, compile_model, load_batch, make_dataset

    train = read_category_dataset(deepfashion)["train"]
    keras.utils.set_random_seed(0)
    model, backbone = build_models("random", SIZE)
    assert len(model.get_layer("img").get_weights()[1]) == 46
    assert sum(layer.trainable for layer in backbone.layers) <= 12
    compile_model(model, 1e-4)  # the CLI's default rate
    pixels, targets = load_batch(train[:8], SIZE)
    before = model.evaluate(pixels, targets, verbose=0, return_dict=True)
    model.fit(make_dataset(train, 4, SIZE, shuffle=True), epochs=1, verbose=0)
    after = model.evaluate(pixels, targets, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"], (before, after)


@pytest.mark.slow
@pytest.mark.ml
def test_training_writes_backbone_weights_that_load_into_resnet50_and_a_bundle(
    deepfashion: Path, tmp_path: Path
) -> None:
    keras = keras_torch()
    from shared.ml.bundle import load_bundle
    from shared.ml.embedder import Embedder
    from training.train_embedder import train_embedder

    out, bundle_dir = tmp_path / "out", tmp_path / "bundle"
    result = train_embedder(
        deepfashion,
        out,
        weights="random",
        epochs=1,
        batch_size=4,
        input_size=SIZE,
        learning_rate=1e-3,
        bundle_dir=bundle_dir,
        verbose=0,
    )
    assert result.epochs_run == (1,)
    assert {"loss", "val_loss", "img_accuracy", "val_bbox_mae"} <= set(result.history)

    rng = np.random.default_rng(0)
    pixels = rng.uniform(-100, 100, size=(2, SIZE, SIZE, 3)).astype(np.float32)
    loaded = vector(fresh_resnet(keras, result.backbone_weights), pixels)
    assert loaded.shape == (2, 2048)
    # The trained backbone is not the random start: training changed the last layers.
    keras.utils.set_random_seed(0)
    start = vector(fresh_resnet(keras), pixels)
    assert not np.allclose(loaded, start)

    bundle = load_bundle(load_settings({"model_dir": bundle_dir}, environ={}))
    assert not bundle.has_detector and bundle.input_size == SIZE
    assert bundle.manifest["provenance"]["embedder"]["epochs"] == 1
    embedder = Embedder.from_bundle(bundle, backend="torch")
    np.testing.assert_allclose(vector(embedder.model, pixels), loaded, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.ml
def test_resume_continues_at_the_next_epoch(deepfashion: Path, tmp_path: Path) -> None:
    keras_torch()
    from training.train_embedder import train_embedder

    out = tmp_path / "out"
    kwargs = {"weights": "random", "batch_size": 8, "input_size": SIZE, "limit": 8, "verbose": 0}
    first = train_embedder(deepfashion, out, epochs=1, **kwargs)
    assert first.epochs_run == (1,)
    assert json.loads((out / "checkpoint.json").read_text())["epochs_done"] == 1

    progress: list[tuple[int, int, dict[str, float]]] = []
    second = train_embedder(
        deepfashion,
        out,
        epochs=2,
        resume=True,
        on_progress=lambda done, total, metrics: progress.append((done, total, dict(metrics))),
        **kwargs,
    )
    assert second.epochs_run == (2,)
    # The demo's progress bar counts this call's batches only: epoch 2's one batch of 8.
    assert [(done, total, metrics["epoch"]) for done, total, metrics in progress] == [(1, 1, 2.0)]
    assert progress[0][2]["loss"] == pytest.approx(second.history["loss"][0], rel=1e-5)
    assert len(second.history["loss"]) == 1
    assert json.loads((out / "checkpoint.json").read_text())["epochs_done"] == 2

    done = train_embedder(deepfashion, out, epochs=2, resume=True, **kwargs)
    assert done.epochs_run == () and done.history == {}


@pytest.mark.slow
@pytest.mark.ml
def test_cli_trains_under_the_tensorflow_backend_and_the_weights_load_under_torch(
    deepfashion: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train_embedder",
            "--data",
            str(deepfashion),
            "--output",
            str(out),
            "--weights",
            "random",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--input-size",
            str(SIZE),
            "--limit",
            "8",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "val_loss" in completed.stdout  # Keras's own progress bar, with validation
    keras = keras_torch()
    pixels = np.zeros((1, SIZE, SIZE, 3), dtype=np.float32)
    assert vector(fresh_resnet(keras, out / "backbone.weights.h5"), pixels).shape == (1, 2048)
