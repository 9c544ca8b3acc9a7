"""Detector training: DeepFashion2 -> COCO -> DefaultTrainer -> bundle -> the worker's pipeline."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from shared.config import load_settings
from training import synthetic
from training.deepfashion2_to_coco import LANDMARK_COUNTS, convert
from training.detector_config import build_config

Box = tuple[int, int, int, int]


def write_single_garment_set(out: Path, count: int, size: int, seed: int) -> dict[str, Box]:
    """DeepFashion2 layout with one big garment per image; returns its box by image stem.

    One garment per photo keeps a from-scratch detector's job small enough for a CPU test, while
    everything still goes through the real annotation format and converter.
    """
    (out / "annos").mkdir(parents=True, exist_ok=True)
    (out / "image").mkdir(parents=True, exist_ok=True)
    boxes = {}
    for index in range(1, count + 1):
        rng = synthetic.sample_rng("single-garment", seed, index)
        plan = synthetic.plan_outfit(rng, size, weights=(0, 1, 1, 1))
        image, drawn = synthetic.render(rng, size, plan)
        stem = f"{index:06d}"
        image.save(out / "image" / f"{stem}.jpg", quality=90)
        (garment,) = drawn
        category = garment.spec.category_id
        annotation = {
            "source": "shop",
            "pair_id": index,
            "item1": {
                "category_id": category,
                "category_name": garment.spec.category_name,
                "bounding_box": list(garment.bbox),
                "style": 0,
                "segmentation": [list(flat) for flat in garment.polygons],
                "landmarks": synthetic.outline_landmarks(
                    garment.polygons, LANDMARK_COUNTS[category - 1], rng
                ),
            },
        }
        (out / "annos" / f"{stem}.json").write_text(json.dumps(annotation), encoding="utf-8")
        boxes[stem] = garment.bbox
    return boxes


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.ml
def test_tiny_gn_preset_is_a_groupnorm_resnet18_with_the_articles_head_settings() -> None:
    cfg = build_config(preset="tiny-gn")
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.NORM == "GN"
    assert cfg.MODEL.FPN.NORM == "GN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 13
    assert cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 64
    assert cfg.MODEL.WEIGHTS == ""

    article = build_config(opts=["SOLVER.MAX_ITER", "7"])
    assert article.MODEL.RESNETS.DEPTH == 101
    assert (article.SOLVER.IMS_PER_BATCH, article.SOLVER.BASE_LR) == (4, 0.001)
    assert (article.SOLVER.WARMUP_ITERS, article.SOLVER.GAMMA) == (1000, 0.05)
    assert tuple(article.SOLVER.STEPS) == (1000, 1500)
    assert article.SOLVER.MAX_ITER == 7  # --opts wins over the article's 1500


@pytest.mark.ml
def test_cli_rejects_missing_inputs_and_bad_opts_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train_detector import main

    missing = tmp_path / "nope.json"
    assert main(["--train-json", str(missing), "--train-images", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err

    coco = tmp_path / "train.json"
    coco.write_text("{}", encoding="utf-8")
    assert main(["--train-json", str(coco), "--train-images", str(tmp_path / "imgs")]) == 2
    assert str(tmp_path / "imgs") in capsys.readouterr().err

    assert (
        main(
            [
                "--train-json",
                str(coco),
                "--train-images",
                str(tmp_path),
                "--opts",
                "SOLVER.NO_SUCH_KEY",
                "1",
            ]
        )
        == 2
    )
    assert "SOLVER.NO_SUCH_KEY" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ml
def test_cli_trains_a_few_iterations_with_validation_and_writes_a_loadable_bundle(
    tmp_path: Path,
) -> None:
    import torch

    from shared.ml.bundle import load_bundle
    from training.train_detector import main

    synthetic.write_deepfashion2(tmp_path / "df2", 6, size=128, seed=3)
    convert(
        tmp_path / "df2" / "annos",
        tmp_path / "df2" / "image",
        tmp_path / "train.json",
        progress=False,
    )
    bundle_dir = tmp_path / "bundle"
    code = main(
        [
            "--train-json",
            str(tmp_path / "train.json"),
            "--train-images",
            str(tmp_path / "df2" / "image"),
            "--val-json",
            str(tmp_path / "train.json"),
            "--val-images",
            str(tmp_path / "df2" / "image"),
            "--preset",
            "tiny-gn",
            "--output",
            str(tmp_path / "out"),
            "--bundle",
            str(bundle_dir),
            "--zip",
            "--embedder-weights",
            "random",
            "--opts",
            "SOLVER.MAX_ITER",
            "3",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.MIN_SIZE_TEST",
            "96",
        ]
    )
    assert code == 0
    # The validation set was evaluated (pure-Python COCOeval) at the end of training.
    metrics = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.json").read_text().splitlines()
    ]
    assert any("bbox/AP" in m for m in metrics)

    bundle = load_bundle(load_settings({"model_dir": bundle_dir}, environ={}))
    assert bundle.has_detector and bundle.embedder_weights == "random"
    assert bundle.manifest["provenance"]["detector"]["preset"] == "tiny-gn"
    state = torch.load(bundle.detector_weights, map_location="cpu", weights_only=True)
    assert set(state) == {"model"}
    assert any(key.startswith("backbone.bottom_up") for key in state["model"])
    with zipfile.ZipFile(tmp_path / "bundle.zip") as archive:
        assert {"manifest.json", "detector/config.yaml", "detector/model_final.pth"} <= set(
            archive.namelist()
        )


@pytest.mark.slow
@pytest.mark.ml
def test_tiny_detector_trained_from_scratch_finds_the_planted_garments_through_the_worker_path(
    tmp_path: Path,
) -> None:
    """The key test: train, bundle, load with the worker's pipeline, find unseen garments.

    Class-agnostic: a planted garment counts as found when the pipeline's top or bottom crop
    overlaps it with IoU > 0.5. At this budget (200 iterations from random weights, under a
    minute on two cores) boxes are good but the 13-way labels and scores are not, so the
    bundle's threshold is set low.
    """
    import torch

    from shared.ml.pipeline import get_pipeline
    from training.train_detector import train_detector

    # The initial weights, the sampler's order and the augmentations come from torch's, NumPy's
    # and Python's global generators, which training leaves unseeded: seeded here, so the count
    # of garments found is the same on every run rather than a draw.
    torch.manual_seed(0)
    np.random.seed(0)  # detectron2 draws from the global generator
    random.seed(0)
    size = 128
    write_single_garment_set(tmp_path / "train", 64, size, seed=0)
    convert(
        tmp_path / "train" / "annos",
        tmp_path / "train" / "image",
        tmp_path / "train.json",
        progress=False,
    )
    bundle_dir = train_detector(
        tmp_path / "train.json",
        tmp_path / "train" / "image",
        output_dir=tmp_path / "out",
        bundle_dir=tmp_path / "bundle",
        preset="tiny-gn",
        embedder_weights="random",
        score_threshold=0.1,
        opts=[
            "SOLVER.MAX_ITER",
            "200",
            "SOLVER.STEPS",
            "(160,)",
            "INPUT.MIN_SIZE_TRAIN",
            f"({size},)",
            "INPUT.MIN_SIZE_TEST",
            str(size),
        ],
    )

    unseen = write_single_garment_set(tmp_path / "test", 12, size, seed=1)
    photos = [(tmp_path / "test" / "image" / f"{stem}.jpg").read_bytes() for stem in unseen]
    settings = load_settings(
        {
            "model_dir": bundle_dir,
            "embedder_weights": "random",
            "device": "cpu",
            "keras_backend": "torch",
            "embedder_input_size": 64,
        },
        environ={},
    )
    results = get_pipeline(settings).process(photos)

    found = 0
    for truth, result in zip(unseen.values(), results, strict=True):
        assert result.ok and result.vectors["full"].shape == (2048,)
        overlaps = [iou(crop.box, truth) for crop in result.crops.values()]
        found += max(overlaps, default=0.0) > 0.5
    assert found >= 0.75 * len(unseen), f"found {found} of {len(unseen)} planted garments"


@pytest.mark.slow
@pytest.mark.ml
def test_training_tells_its_caller_after_every_iteration_with_the_loss(tmp_path: Path) -> None:
    # What the demo's progress bar is drawn from (demo.train_bundle).
    from training.train_detector import train_detector

    synthetic.write_deepfashion2(tmp_path / "df2", 6, size=128, seed=3)
    convert(
        tmp_path / "df2" / "annos",
        tmp_path / "df2" / "image",
        tmp_path / "train.json",
        progress=False,
    )
    progress: list[tuple[int, int, dict[str, float]]] = []
    train_detector(
        tmp_path / "train.json",
        tmp_path / "df2" / "image",
        output_dir=tmp_path / "out",
        preset="tiny-gn",
        opts=["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(96,)"],
        on_progress=lambda done, total, metrics: progress.append((done, total, dict(metrics))),
    )
    assert [(done, total) for done, total, _ in progress] == [(1, 3), (2, 3), (3, 3)]
    assert all(0 < metrics["loss"] < 100 for _, _, metrics in progress)
    # Detectron2's own log still goes where the training guide says.
    assert "Starting training from iteration 0" in (tmp_path / "out" / "log.txt").read_text()
