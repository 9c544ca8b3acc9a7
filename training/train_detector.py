"""Train the garment detector (the article's step 2) and package it (step 3).

Usage::

    python -m training.train_detector --train-json FILE --train-images DIR [--val-json FILE
        --val-images DIR] [--preset article|tiny-gn] [--base-config NAME|FILE]
        [--weights zoo|FILE] [--device cpu|cuda] [--output DIR] [--bundle DIR [--zip]]
        [--opts KEY VALUE ...]

The COCO files come from ``python -m training.deepfashion2_to_coco``. Training runs on
Detectron2's ``DefaultTrainer`` with the article's solver settings (see
:mod:`training.detector_config`); progress is Detectron2's own log lines. With ``--bundle`` the
trained model is written as a model bundle (``detector/config.yaml`` + ``model_final.pth``) that
the workers load unchanged; ``--zip`` also writes ``<bundle>.zip``.

Without ``--weights`` training starts from random weights, which only converges with a
GroupNorm config such as ``--preset tiny-gn``. ``--weights zoo`` downloads the COCO checkpoint
(needs the internet).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.ml.bundle import BundleError
from training.bundle_writer import BundleWriteError
from training.detector_config import (
    DEFAULT_BASE_CONFIG,
    PRESETS,
    ConfigError,
    build_config,
    inference_config,
)

if TYPE_CHECKING:
    from training.progress import ProgressCallback

log = logging.getLogger(__name__)

TRAIN_DATASET = "visrec_detector_train"
VAL_DATASET = "visrec_detector_val"
EXIT_USER_ERROR = 2


class TrainingInputError(Exception):
    """Bad input files, reported to the user with the file's name and no traceback."""


def _check_coco(json_path: Path, images_dir: Path) -> None:
    if not json_path.is_file():
        raise TrainingInputError(f"{json_path}: COCO annotation file not found")
    if not images_dir.is_dir():
        raise TrainingInputError(f"{images_dir}: images folder not found")


def register_dataset(name: str, json_path: Path | str, images_dir: Path | str) -> str:
    """Register a COCO file under ``name``, replacing an earlier registration of that name."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    json_path, images_dir = Path(json_path), Path(images_dir)
    _check_coco(json_path, images_dir)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_path), str(images_dir))
    return name


def _trainer_class() -> type:
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: str | None = None):
            folder = output_folder or str(Path(cfg.OUTPUT_DIR) / "inference")
            # Our detectron2 build has no C++ ops, so the pure-Python COCOeval it is.
            return COCOEvaluator(dataset_name, output_dir=folder, use_fast_impl=False)

        def build_writers(self):
            from detectron2.utils.events import CommonMetricPrinter, JSONWriter

            # No TensorboardXWriter: it imports TensorFlow when installed, and TensorFlow next
            # to torch/triton in one process can segfault (docs/architecture.md#keras-on-torch).
            return [
                CommonMetricPrinter(self.max_iter),
                JSONWriter(str(Path(self.cfg.OUTPUT_DIR) / "metrics.json")),
            ]

    return Trainer


def _progress_hook(on_progress: ProgressCallback) -> Any:
    from detectron2.engine import HookBase

    class ReportProgress(HookBase):
        def after_step(self) -> None:
            trainer = self.trainer
            metrics: dict[str, float] = {}
            losses = trainer.storage.histories().get("total_loss")
            if losses is not None:
                # The median of the last 20, as Detectron2's own log line shows it.
                metrics["loss"] = float(losses.median(20))
            on_progress(trainer.iter + 1, trainer.max_iter, metrics)

    return ReportProgress()


def save_model_weights(model: Any, path: Path) -> Path:
    """Save only ``{"model": state_dict}``: loads with torch.load's weights_only default."""
    import torch

    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def write_detector_bundle(
    cfg: Any,
    weights_path: Path,
    bundle_dir: Path | str,
    *,
    provenance: dict[str, Any] | None = None,
    score_threshold: float | None = None,
    embedder_weights: str | None = None,
    zip_bundle: bool = False,
) -> Path:
    """Put config.yaml + model_final.pth into a bundle, keeping an embedder already there."""
    from training.bundle_writer import update_bundle

    bundle_dir = Path(bundle_dir)
    update_bundle(
        bundle_dir,
        detector_config=inference_config(cfg),
        detector_weights=weights_path,
        embedder_weights=embedder_weights,
        score_threshold=score_threshold,
        provenance=provenance,
        zip_bundle=zip_bundle,
    )
    return bundle_dir


def train_detector(
    train_json: Path | str,
    train_images: Path | str,
    *,
    val_json: Path | str | None = None,
    val_images: Path | str | None = None,
    output_dir: Path | str = "var/train/detector",
    bundle_dir: Path | str | None = None,
    zip_bundle: bool = False,
    base_config: str = DEFAULT_BASE_CONFIG,
    preset: str = "article",
    weights: str | None = None,
    device: str = "cpu",
    opts: Sequence[str] = (),
    score_threshold: float | None = None,
    embedder_weights: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Train with DefaultTrainer; returns the bundle folder, or the weights file if no bundle.

    ``weights``: a checkpoint file, ``"zoo"`` or None (random). ``opts``: detectron2
    ``KEY VALUE`` pairs applied last. ``score_threshold`` and ``embedder_weights`` go into the
    bundle's manifest (default: what the bundle already says, else 0.55 and 'imagenet').
    ``on_progress`` is called after every iteration with (iterations done, ``SOLVER.MAX_ITER``,
    ``{"loss": ...}``). Detectron2's log goes to stdout and to ``<output_dir>/log.txt``.
    Raises :class:`TrainingInputError` or ``ConfigError`` on bad input, before training starts.
    """
    if (val_json is None) != (val_images is None):
        raise TrainingInputError("--val-json and --val-images go together")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_name = register_dataset(TRAIN_DATASET, train_json, train_images)
    test_names: tuple[str, ...] = ()
    if val_json is not None and val_images is not None:
        test_names = (register_dataset(VAL_DATASET, val_json, val_images),)
    cfg = build_config(
        base_config=base_config,
        preset=preset,
        train_datasets=(train_name,),
        test_datasets=test_names,
        weights=weights,
        device=device,
        output_dir=output_dir,
        opts=opts,
    )
    (output_dir / "config.yaml").write_text(cfg.dump(), encoding="utf-8")

    from detectron2.utils.logger import setup_logger

    # Detectron2's trainer reports progress (losses, ETA) through its "detectron2" logger.
    # Colours only on a terminal: a redirected stdout is a log file (the demo's training log).
    setup_logger(output=str(output_dir), name="detectron2", color=sys.stdout.isatty())
    logging.getLogger("detectron2.engine.defaults").addFilter(_skip_architecture_dump)
    trainer = _trainer_class()(cfg)
    if on_progress is not None:
        trainer.register_hooks([_progress_hook(on_progress)])
    trainer.resume_or_load(resume=False)
    trainer.train()

    weights_path = save_model_weights(trainer.model, output_dir / "weights" / "model_final.pth")
    if bundle_dir is None:
        return weights_path
    provenance = {
        "detector": {
            "base_config": base_config,
            "preset": preset,
            "initial_weights": weights or "random",
            "train_json": str(train_json),
            "max_iter": int(cfg.SOLVER.MAX_ITER),
            "opts": [str(o) for o in opts],
        }
    }
    return write_detector_bundle(
        cfg,
        weights_path,
        bundle_dir,
        provenance=provenance,
        score_threshold=score_threshold,
        embedder_weights=embedder_weights,
        zip_bundle=zip_bundle,
    )


def _skip_architecture_dump(record: logging.LogRecord) -> bool:
    # DefaultTrainer logs the whole network (hundreds of lines) before training; the config.yaml
    # written next to the weights already says exactly what was built.
    return not str(record.msg).startswith("Model:\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train_detector",
        description="Train the Detectron2 garment detector.",
    )
    parser.add_argument("--train-json", required=True, type=Path, help="COCO file (converter)")
    parser.add_argument("--train-images", required=True, type=Path, help="its images folder")
    parser.add_argument("--val-json", type=Path, help="COCO file evaluated during training")
    parser.add_argument("--val-images", type=Path)
    parser.add_argument(
        "--base-config",
        default=DEFAULT_BASE_CONFIG,
        help=f"model zoo name or yaml file (default {DEFAULT_BASE_CONFIG})",
    )
    parser.add_argument(
        "--preset",
        default="article",
        choices=sorted(PRESETS),
        help="article: the article's settings; tiny-gn: R18 GroupNorm, small "
        "images, trains from random weights on a CPU",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="initial weights: a .pth/.pkl file, or 'zoo' for the model zoo "
        "checkpoint (internet); default random",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("var/train/detector"),
        help="trainer output folder (logs, checkpoints)",
    )
    parser.add_argument("--bundle", type=Path, help="write a model bundle here")
    parser.add_argument("--zip", action="store_true", help="also write <bundle>.zip")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="detection score threshold stored in the bundle (default: the bundle's, else 0.55)",
    )
    parser.add_argument(
        "--embedder-weights",
        default=None,
        help="embedder named in a new bundle: imagenet, random or a .weights.h5 "
        "(default: keep the bundle's, else imagenet)",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="detectron2 config overrides: KEY VALUE ... (must come last)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.zip and args.bundle is None:
        parser.error("--zip needs --bundle")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
    try:
        result = train_detector(
            args.train_json,
            args.train_images,
            val_json=args.val_json,
            val_images=args.val_images,
            output_dir=args.output,
            bundle_dir=args.bundle,
            zip_bundle=args.zip,
            base_config=args.base_config,
            preset=args.preset,
            weights=args.weights,
            device=args.device,
            opts=args.opts,
            score_threshold=args.score_threshold,
            embedder_weights=args.embedder_weights,
        )
    except (TrainingInputError, ConfigError, BundleWriteError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
