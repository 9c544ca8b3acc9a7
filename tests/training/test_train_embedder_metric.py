"""Embedder training beyond the article: Proxy-Anchor on In-shop item ids, every layer trained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training import synthetic
from training.train_embedder import main, read_training_data

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


@pytest.fixture
def inshop(tmp_path: Path) -> Path:
    root = tmp_path / "inshop"
    synthetic.write_inshop(root, 12, size=SIZE, seed=0)
    return root


def test_inshop_training_classes_are_its_train_items(inshop: Path) -> None:
    data = read_training_data(inshop)
    partition = (inshop / "Eval" / "list_eval_partition.txt").read_text().splitlines()[2:]
    train_items = {line.split()[1] for line in partition if line.split()[2] == "train"}
    assert data.layout == "inshop" and data.val == []
    assert len(data.train) == sum(line.split()[2] == "train" for line in partition)
    assert data.num_groups == len(train_items)
    assert {s.group for s in data.train} == set(range(len(train_items)))
    # Photos of one item share its class; every photo has its garment's box.
    by_folder: dict[Path, set[int]] = {}
    for sample in data.train:
        by_folder.setdefault(sample.image_path.parent, set()).add(sample.group)
        assert sample.bbox is not None
    assert all(len(groups) == 1 for groups in by_folder.values())


def test_article_heads_on_inshop_without_boxes_say_what_is_missing(
    inshop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (inshop / "Anno" / "list_bbox_inshop.txt").unlink()
    code = main(
        [
            "--data",
            str(inshop),
            "--output",
            str(tmp_path / "out"),
            "--weights",
            "random",
            "--loss",
            "both",
        ]
    )
    assert code == 2
    assert "list_bbox_inshop.txt" in capsys.readouterr().err


def test_trainable_layers_must_be_a_count_or_all(
    inshop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--data",
            str(inshop),
            "--output",
            str(tmp_path / "out"),
            "--weights",
            "random",
            "--loss",
            "metric",
            "--trainable-layers",
            "most",
        ]
    )
    assert code == 2
    assert "--trainable-layers" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ml
def test_metric_recipe_trains_every_layer_and_writes_a_loadable_bundle(
    inshop: Path, tmp_path: Path
) -> None:
    from shared.config import load_settings
    from shared.ml.bundle import load_bundle
    from shared.ml.embedder import Embedder, import_keras
    from training.train_embedder import train_embedder

    keras = import_keras("torch")
    result = train_embedder(
        inshop,
        tmp_path / "out",
        weights="random",
        epochs=2,
        batch_size=8,
        input_size=SIZE,
        learning_rate=3e-4,
        loss="metric",
        trainable_layers="all",
        crop_to_box=0.5,
        bundle_dir=tmp_path / "bundle",
        verbose=0,
    )
    assert set(result.history) == {"loss"}

    trained = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=(SIZE, SIZE, 3)
    )
    trained.load_weights(str(result.backbone_weights))
    start = Embedder("random", SIZE, backend="torch").model
    # Every layer trained, the first convolution too (the article's recipe leaves it as it was).
    first = next(layer for layer in trained.layers if layer.get_weights())
    assert not np.allclose(first.get_weights()[0], start.get_layer(first.name).get_weights()[0])

    bundle = load_bundle(load_settings({"model_dir": tmp_path / "bundle"}, environ={}))
    provenance = bundle.manifest["provenance"]["embedder"]
    assert (provenance["loss"], provenance["trainable_layers"], provenance["layout"]) == (
        "metric",
        "all",
        "inshop",
    )
    vectors = Embedder.from_bundle(bundle, backend="torch").embed(
        [np.full((SIZE, SIZE, 3), 200, np.uint8)]
    )
    assert vectors.shape == (1, 2048)


@pytest.mark.slow
@pytest.mark.ml
def test_metric_loss_trains_under_the_tensorflow_backend(inshop: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train_embedder",
            "--data",
            str(inshop),
            "--output",
            str(out),
            "--weights",
            "random",
            "--loss",
            "both",
            "--trainable-layers",
            "all",
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
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "proxy_loss" in completed.stdout and "img_loss" in completed.stdout
    assert (out / "backbone.weights.h5").is_file()
