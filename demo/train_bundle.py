"""Train the small demo bundle on synthetic data: ``python -m demo.train_bundle --out DIR``.

Run by :mod:`demo.bundle` in a child process (ML frameworks stay out of the demo's own process).
It uses the training library exactly as a user would: synthetic DeepFashion2 -> COCO ->
``train_detector`` (``tiny-gn``: ResNet-18 GroupNorm, 160 px, trains from random weights), then
``train_embedder`` on synthetic DeepFashion at a small input size, both into the same bundle.
Sized for a couple of minutes on two CPU cores: it shows the pipeline working end to end, not
a model worth shipping (for that, see the training guide in README.md).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

# torch/detectron2 load before keras, and keras runs on torch (design.md).
os.environ.setdefault("KERAS_BACKEND", "torch")

DETECTOR_IMAGES = 96
DETECTOR_ITERATIONS = 200
# The score threshold the demo bundle ships with: a detector this briefly trained is unsure
# of itself, and 0.55 would drop most of its (correct) boxes.
DEMO_SCORE_THRESHOLD = 0.3
EMBEDDER_IMAGES = 192
EMBEDDER_INPUT_SIZE = 128
EMBEDDER_EPOCHS = 2


def _step(message: str, started: float) -> None:
    print(f"{message} ({time.monotonic() - started:.0f} s)", flush=True)


def train_detector_part(bundle: Path, work: Path) -> None:
    from training.deepfashion2_to_coco import convert
    from training.synthetic import write_deepfashion2
    from training.train_detector import train_detector

    started = time.monotonic()
    data = work / "deepfashion2"
    write_deepfashion2(data, DETECTOR_IMAGES, size=256, seed=11)
    convert(data / "annos", data / "image", work / "deepfashion2_coco.json", progress=False)
    _step(f"detector: {DETECTOR_IMAGES} synthetic DeepFashion2 photos converted to COCO", started)
    train_detector(
        work / "deepfashion2_coco.json",
        data / "image",
        output_dir=work / "detector",
        bundle_dir=bundle,
        preset="tiny-gn",
        device="cpu",
        score_threshold=DEMO_SCORE_THRESHOLD,
        opts=[
            "SOLVER.MAX_ITER",
            DETECTOR_ITERATIONS,
            "SOLVER.STEPS",
            (int(DETECTOR_ITERATIONS * 0.8),),
        ],
    )
    _step(f"detector: tiny-gn trained for {DETECTOR_ITERATIONS} iterations", started)


def train_embedder_part(bundle: Path, work: Path) -> None:
    from training import train_embedder as embedder_training
    from training.synthetic import write_deepfashion

    started = time.monotonic()
    data = work / "deepfashion"
    write_deepfashion(data, EMBEDDER_IMAGES, size=EMBEDDER_INPUT_SIZE, seed=12)
    _step(f"embedder: {EMBEDDER_IMAGES} synthetic DeepFashion photos", started)
    embedder_training.train_embedder(
        data,
        bundle_dir=bundle,
        output_dir=work / "embedder",
        weights="random",
        input_size=EMBEDDER_INPUT_SIZE,
        epochs=EMBEDDER_EPOCHS,
    )
    _step(
        f"embedder: ResNet50 trained for {EMBEDDER_EPOCHS} epochs at {EMBEDDER_INPUT_SIZE} px",
        started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.train_bundle")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    # torch first (design.md: TensorFlow + triton in one process segfault the other way round).
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    train_detector_part(args.out, args.work)
    train_embedder_part(args.out, args.work)
    print(f"bundle written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
