"""Train the small demo bundle on synthetic data: ``python -m demo.train_bundle --out DIR``.

Run by :mod:`demo.bundle` in a child process (ML frameworks stay out of the demo's own process).
It uses the training library exactly as a user would: synthetic DeepFashion2 -> COCO ->
``train_detector`` (``tiny-gn``: ResNet-18 GroupNorm, 160 px, trains from random weights), then
``train_embedder --loss metric --trainable-layers all --augment --crop-to-box SHARE`` on
synthetic In-shop items, both into the same bundle. The numbers are in :mod:`demo.recipe`.
Sized for a few minutes on two CPU cores: it shows the pipeline working end to end, not a model
worth shipping (for that, see the training guide in README.md).

Its stdout and stderr are the training log (Detectron2's and Keras's own lines); with
``--progress-fd N`` it also reports each step and the detector's iterations and the embedder's
batches on that file descriptor, as :mod:`demo.progress` lines the demo draws as bars.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

# torch/detectron2 load before keras, and keras runs on torch (docs/architecture.md#keras-on-torch).
os.environ.setdefault("KERAS_BACKEND", "torch")

from demo import recipe as r
from demo.progress import message_line, progress_line


class Reporter:
    """Step messages to the log and the progress pipe; iteration counts to the pipe only."""

    def __init__(self, pipe: IO[str] | None) -> None:
        self.pipe = pipe

    def step(self, message: str, started: float) -> None:
        text = f"{message} ({time.monotonic() - started:.0f} s)"
        print(text, flush=True)
        self._send(message_line(text))

    def detector(self, done: int, total: int, metrics: Mapping[str, float]) -> None:
        loss = metrics.get("loss")
        self._send(progress_line("detector", "it", done, total, _loss_note(loss)))

    def embedder(self, done: int, total: int, metrics: Mapping[str, float]) -> None:
        epoch, loss = metrics.get("epoch"), metrics.get("loss")
        note = ", ".join(
            part
            for part in (
                f"epoch {epoch:.0f}/{r.EMBEDDER_EPOCHS}" if epoch is not None else "",
                _loss_note(loss),
            )
            if part
        )
        self._send(progress_line("embedder", "batch", done, total, note))

    def _send(self, line: str) -> None:
        if self.pipe is not None:
            self.pipe.write(line)
            self.pipe.flush()


def _loss_note(loss: float | None) -> str:
    return "" if loss is None else f"loss {loss:.3f}"


def train_detector_part(bundle: Path, work: Path, report: Reporter) -> None:
    from training.deepfashion2_to_coco import convert
    from training.synthetic import write_deepfashion2
    from training.train_detector import train_detector

    started = time.monotonic()
    data = work / "deepfashion2"
    write_deepfashion2(
        data,
        r.DETECTOR_IMAGES,
        size=r.DETECTOR_IMAGE_SIZE,
        seed=r.DETECTOR_SEED,
        outfit_weights=r.DETECTOR_OUTFIT_WEIGHTS,
    )
    convert(data / "annos", data / "image", work / "deepfashion2_coco.json", progress=False)
    report.step(
        f"detector: {r.DETECTOR_IMAGES} synthetic DeepFashion2 photos converted to COCO", started
    )
    train_detector(
        work / "deepfashion2_coco.json",
        data / "image",
        output_dir=work / "detector",
        bundle_dir=bundle,
        preset=r.DETECTOR_PRESET,
        device="cpu",
        score_threshold=r.DEMO_SCORE_THRESHOLD,
        opts=[
            "SOLVER.MAX_ITER",
            r.DETECTOR_ITERATIONS,
            "SOLVER.STEPS",
            (int(r.DETECTOR_ITERATIONS * 0.8),),
        ],
        on_progress=report.detector,
    )
    report.step(
        f"detector: {r.DETECTOR_PRESET} trained for {r.DETECTOR_ITERATIONS} iterations", started
    )


def train_embedder_part(bundle: Path, work: Path, report: Reporter) -> None:
    from training import train_embedder as embedder_training
    from training.synthetic import write_inshop

    started = time.monotonic()
    data = work / "inshop"
    write_inshop(data, r.EMBEDDER_ITEMS, size=r.EMBEDDER_INPUT_SIZE, seed=r.EMBEDDER_SEED)
    report.step(f"embedder: {r.EMBEDDER_ITEMS} synthetic In-shop items", started)
    embedder_training.train_embedder(
        data,
        bundle_dir=bundle,
        output_dir=work / "embedder",
        weights="random",
        input_size=r.EMBEDDER_INPUT_SIZE,
        epochs=r.EMBEDDER_EPOCHS,
        batch_size=r.EMBEDDER_BATCH_SIZE,
        learning_rate=r.EMBEDDER_LEARNING_RATE,
        loss=r.EMBEDDER_LOSS,
        trainable_layers=r.EMBEDDER_TRAINABLE_LAYERS,
        crop_to_box=r.EMBEDDER_CROP_TO_BOX,
        augment=r.EMBEDDER_AUGMENT,
        verbose=2,
        on_progress=report.embedder,
    )
    report.step(
        f"embedder: ResNet50, {r.EMBEDDER_LOSS} loss, {r.EMBEDDER_TRAINABLE_LAYERS} layers, "
        f"{r.EMBEDDER_EPOCHS} epochs at {r.EMBEDDER_INPUT_SIZE} px"
        f"{', augmented' if r.EMBEDDER_AUGMENT else ''}",
        started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.train_bundle")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument(
        "--progress-fd",
        type=int,
        default=None,
        help="an open file descriptor to report progress on (demo.progress lines)",
    )
    args = parser.parse_args(argv)
    pipe = None if args.progress_fd is None else os.fdopen(args.progress_fd, "w", encoding="utf-8")
    try:
        return _train(args.out, args.work, Reporter(pipe))
    finally:
        if pipe is not None:
            pipe.close()


def _train(out: Path, work: Path, report: Reporter) -> int:
    # A scratch folder: an earlier recipe's checkpoints there must not be resumed from.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # torch first: TensorFlow + triton in one process segfault the other way round
    # (docs/architecture.md#keras-on-torch).
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    train_detector_part(out, work, report)
    train_embedder_part(out, work, report)
    print(f"bundle written to {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
