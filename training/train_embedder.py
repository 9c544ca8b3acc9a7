"""Fine-tune the ResNet50 embedder: the article's recipe, or metric learning for retrieval.

Usage::

    python -m training.train_embedder --data DIR --output DIR [--weights imagenet|random|FILE]
        [--loss article|metric|both] [--trainable-layers N|all]
        [--epochs N] [--batch-size N] [--input-size PX] [--limit N] [--lr X] [--resume]
        [--bundle DIR [--zip]]

``--data`` is either DeepFashion layout (see :mod:`training.deepfashion`): Category and
Attribute Prediction (classes: its categories) or In-shop Clothes Retrieval (its ``train``
partition; classes: the item ids, category from the image's folder, boxes from
``Anno/list_bbox_inshop.txt`` when the article's heads need them).

``--loss article`` (the default) is the article's model: ResNet50 (no top, average pooling), a
46-way category head ``img`` (Dense 512 elu -> Dense 46 softmax) and a box head ``bbox`` (Dense
512 relu -> Dense 128 relu -> Dense 4), L2 0.001 on the hidden layers. Boxes are x1, y1, x2, y2
divided by the image's width and height. ``--loss metric`` trains the pooled 2048-d embedding
itself with Proxy-Anchor (:mod:`training.metric_loss`), one proxy per class; ``both`` adds it to
the article's heads. ``--trainable-layers`` is how many of ResNet50's last layers train (the
article: 12); ``all`` trains every layer, the only sensible choice from random weights.
BatchNormalization stays in inference mode either way (see :func:`build_models`).
Images are letterboxed to ``--input-size`` and go through ResNet50's ``preprocess_input``,
exactly as the workers prepare them.

Each epoch ends with ``<output>/checkpoint.weights.h5`` (the whole model) and
``<output>/checkpoint.json`` (epochs done); ``--resume`` continues from the next epoch. The
result is ``<output>/backbone.weights.h5``: the ResNet50 up to global average pooling, what a
bundle's ``embedder/`` holds (``--bundle`` writes it there).

Runs on any Keras backend (``KERAS_BACKEND``: torch as the workers use, or tensorflow).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.deepfashion import (
    CATEGORY_LIST,
    NUM_CATEGORIES,
    CategorySample,
    DatasetError,
    read_category_dataset,
    read_inshop_training,
)

if TYPE_CHECKING:
    from training.progress import ProgressCallback

log = logging.getLogger(__name__)

TRAINABLE_TAIL = 12  # the article: `for layer in model_resnet.layers[:-12]: trainable = False`
ALL_LAYERS = "all"
LOSSES = ("article", "metric", "both")
L2 = 0.001
CHECKPOINT_WEIGHTS = "checkpoint.weights.h5"
CHECKPOINT_STATE = "checkpoint.json"
BACKBONE_WEIGHTS = "backbone.weights.h5"
EXIT_USER_ERROR = 2


class EmbedderTrainingError(Exception):
    """Bad arguments or files, reported without a traceback."""


@dataclass(frozen=True)
class EmbedderSample:
    image_path: Path
    label: int  # 0-based index into the article's 46-way category head
    bbox: tuple[int, int, int, int] | None  # x1, y1, x2, y2 in pixels; None when not annotated
    group: int  # metric-learning class: the category (DeepFashion) or the item (In-shop)


@dataclass(frozen=True)
class TrainingData:
    layout: str  # "deepfashion" or "inshop"
    train: list[EmbedderSample]
    val: list[EmbedderSample]
    num_groups: int


def read_training_data(root: Path | str) -> TrainingData:
    """Samples of either DeepFashion layout, told apart by the category list file."""
    root = Path(root)
    if (root / CATEGORY_LIST).is_file():
        splits = read_category_dataset(root)

        def convert(partition: str) -> list[EmbedderSample]:
            return [
                EmbedderSample(s.image_path, s.label, s.bbox, s.label) for s in splits[partition]
            ]

        return TrainingData("deepfashion", convert("train"), convert("val"), NUM_CATEGORIES)
    images = read_inshop_training(root)
    categories = sorted({image.category for image in images})
    if len(categories) > NUM_CATEGORIES:
        raise DatasetError(
            root, f"{len(categories)} categories: the article's head has {NUM_CATEGORIES}"
        )
    items = sorted({image.item_id for image in images})
    category_index = {name: i for i, name in enumerate(categories)}
    item_index = {item: i for i, item in enumerate(items)}
    train = [
        EmbedderSample(i.image_path, category_index[i.category], i.bbox, item_index[i.item_id])
        for i in images
    ]
    return TrainingData("inshop", train, [], len(items))


def parse_trainable_layers(value: str | int) -> int | None:
    """``all`` -> None (every layer), else a positive layer count."""
    if str(value).strip().lower() == ALL_LAYERS:
        return None
    try:
        count = int(value)
    except ValueError:
        raise EmbedderTrainingError(
            f"--trainable-layers must be a number or 'all', got {value!r}"
        ) from None
    if count < 0:
        raise EmbedderTrainingError("--trainable-layers must be >= 0")
    return count


@dataclass(frozen=True)
class EmbedderTrainingResult:
    backbone_weights: Path
    epochs_run: tuple[int, ...]  # 1-based epoch numbers run by this call
    history: dict[str, list[float]]
    bundle_dir: Path | None


def _keras() -> Any:
    from shared.ml.embedder import import_keras

    return import_keras()


def build_models(
    weights: str,
    input_size: int,
    *,
    loss: str = "article",
    trainable_layers: int | None = TRAINABLE_TAIL,
    num_groups: int = NUM_CATEGORIES,
) -> tuple[Any, Any]:
    """(training model, its ResNet50 backbone).

    The training model's outputs are the article's heads ``img`` and ``bbox`` (``loss``
    article or both) and the proxy similarities ``proxy`` (metric or both).
    ``trainable_layers``: how many of the backbone's last layers train; None for all.
    """
    from shared.ml.embedder import build_backbone
    from training.metric_loss import PROXY_LAYER, proxy_similarity

    if loss not in LOSSES:
        raise EmbedderTrainingError(f"unknown --loss {loss!r}: one of {', '.join(LOSSES)}")
    keras = _keras()
    layers, regularizers = keras.layers, keras.regularizers
    backbone = build_backbone(weights, (input_size, input_size, 3))
    tail = len(backbone.layers) if trainable_layers is None else trainable_layers
    frozen = backbone.layers[: len(backbone.layers) - tail]
    for layer in frozen:
        layer.trainable = False
    for layer in backbone.layers[len(frozen) :]:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Unlike the article, BatchNormalization stays in inference mode (Keras's
            # fine-tuning advice): its statistics from small fine-tuning batches are noisy, and
            # a trained gamma/beta under batch statistics does not match the moving statistics
            # used at inference. Measured here: with trainable BN the loss on a fixed batch
            # rose after an epoch; with it frozen it fell. From random weights too: training
            # every layer with batch statistics took In-shop Recall@1 to 0.05, in inference
            # mode to 0.48 (synthetic split, 64 px, 3 epochs).
            layer.trainable = False
    features = backbone.output
    outputs: dict[str, Any] = {}
    if loss in ("article", "both"):
        x = layers.Dense(512, activation="elu", kernel_regularizer=regularizers.L2(L2))(features)
        outputs["img"] = layers.Dense(NUM_CATEGORIES, activation="softmax", name="img")(x)
        b = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.L2(L2))(features)
        b = layers.Dense(128, activation="relu", kernel_regularizer=regularizers.L2(L2))(b)
        outputs["bbox"] = layers.Dense(4, kernel_initializer="normal", name="bbox")(b)
    if loss in ("metric", "both"):
        outputs[PROXY_LAYER] = proxy_similarity(num_groups)(features)
    model = keras.Model(inputs=backbone.input, outputs=outputs)
    return model, backbone


def compile_model(model: Any, learning_rate: float) -> None:
    from training.metric_loss import PROXY_LAYER, proxy_anchor

    keras = _keras()
    names = set(model.output_names)
    losses: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    if "img" in names:
        losses.update({"img": "sparse_categorical_crossentropy", "bbox": "mse"})
        metrics.update({"img": ["accuracy"], "bbox": ["mae"]})
    if PROXY_LAYER in names:
        losses[PROXY_LAYER] = proxy_anchor()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=losses,
        metrics=metrics or None,
    )


def _cut_to_box(
    rgb: np.ndarray,
    box: tuple[int, int, int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The garment's box with a little random context, and the box in the cut's pixels."""
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = box
    pad_x, pad_y = (x2 - x1) * rng.uniform(0.0, 0.1, 2), (y2 - y1) * rng.uniform(0.0, 0.1, 2)
    left, top = max(0, int(x1 - pad_x[0])), max(0, int(y1 - pad_y[0]))
    right, bottom = min(width, int(x2 + pad_x[1]) + 1), min(height, int(y2 + pad_y[1]) + 1)
    return rgb[top:bottom, left:right], (x1 - left, y1 - top, x2 - left, y2 - top)


# Random resized crops keep at least this share of each side; flips are left-right only
# (garments are not upside down in shop photos).
AUGMENT_MIN_SCALE = 0.75


def _augment(
    rgb: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A random crop of the photo (AUGMENT_MIN_SCALE..1 of each side) and a coin-flip mirror,
    with the box moved along (clipped to the crop)."""
    height, width = rgb.shape[:2]
    scale = rng.uniform(AUGMENT_MIN_SCALE, 1.0)
    crop_h, crop_w = max(1, int(height * scale)), max(1, int(width * scale))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    out = rgb[top : top + crop_h, left : left + crop_w]
    x1, x2 = (float(v) for v in np.clip([box[0] - left, box[2] - left], 0, crop_w))
    y1, y2 = (float(v) for v in np.clip([box[1] - top, box[3] - top], 0, crop_h))
    if rng.random() < 0.5:
        out = out[:, ::-1]
        x1, x2 = crop_w - x2, crop_w - x1
    return np.ascontiguousarray(out), (x1, y1, x2, y2)


def load_batch(
    samples: Sequence[EmbedderSample | CategorySample],
    input_size: int,
    *,
    crop_share: float = 0.0,
    augment: bool = False,
    rng: np.random.Generator | None = None,
    outputs: Sequence[str] = ("img", "bbox"),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Preprocessed pixels and targets for some samples: category index (``img``), box / image
    size (``bbox``; zeros when not annotated) and metric class (``proxy``), those in
    ``outputs`` (the model's output names).

    ``crop_share``: the share of annotated photos cut to their box first, as the workers cut
    out detected garments before embedding them. ``augment``: then a random resized crop and
    a coin-flip mirror per photo (needs ``rng``), the box moved along; an unannotated photo's
    box stays zeros."""
    _keras()  # fixes the backend before keras.applications is imported
    from keras.applications.resnet50 import preprocess_input
    from PIL import Image, UnidentifiedImageError

    from shared.ml.preprocess import letterbox_batch
    from training.metric_loss import PROXY_LAYER

    images, labels, boxes, groups = [], [], [], []
    for sample in samples:
        try:
            with Image.open(sample.image_path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(sample.image_path, f"cannot read image: {exc}") from None
        box = sample.bbox or (0, 0, 0, 0)
        if (
            sample.bbox is not None
            and crop_share > 0
            and rng is not None
            and rng.random() < crop_share
        ):
            rgb, box = _cut_to_box(rgb, sample.bbox, rng)
        if augment and rng is not None:
            rgb, moved = _augment(rgb, box, rng)
            box = moved if sample.bbox is not None else box
        height, width = rgb.shape[:2]
        x1, y1, x2, y2 = box
        boxes.append(np.clip([x1 / width, y1 / height, x2 / width, y2 / height], 0.0, 1.0))
        labels.append(sample.label)
        # DeepFashion's own CategorySample has no group: its class is its category.
        groups.append(getattr(sample, "group", sample.label))
        images.append(rgb)
    pixels = preprocess_input(letterbox_batch(images, input_size))
    targets = {
        "img": np.asarray(labels, dtype=np.int32),
        "bbox": np.asarray(boxes, dtype=np.float32),
        PROXY_LAYER: np.asarray(groups, dtype=np.int32),
    }
    return pixels, {name: targets[name] for name in outputs}


def make_dataset(
    samples: Sequence[EmbedderSample],
    batch_size: int,
    input_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    outputs: Sequence[str] = ("img", "bbox"),
    crop_share: float = 0.0,
    augment: bool = False,
) -> Any:
    """A ``keras.utils.PyDataset`` over ``samples`` (works on every backend)."""
    keras = _keras()

    class CategoryBoxDataset(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.samples = list(samples)
            self.order = np.arange(len(self.samples))
            self.epoch = 0
            self._shuffle()

        def _shuffle(self) -> None:
            if shuffle:
                np.random.default_rng(seed + self.epoch).shuffle(self.order)

        def __len__(self) -> int:
            return -(-len(self.samples) // batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            rng = np.random.default_rng((seed, self.epoch, index))
            return load_batch(
                [self.samples[i] for i in chosen],
                input_size,
                crop_share=crop_share,
                augment=augment,
                rng=rng,
                outputs=outputs,
            )

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._shuffle()

    return CategoryBoxDataset()


def _checkpoint_callback(model: Any, output_dir: Path, meta: dict[str, Any]) -> Any:
    keras = _keras()

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            # Weights first, then the epoch count: a crash between the two re-runs one epoch
            # rather than skipping one.
            model.save_weights(str(output_dir / CHECKPOINT_WEIGHTS))
            state = {
                **meta,
                "epochs_done": epoch + 1,
                "logs": {k: float(v) for k, v in (logs or {}).items()},
            }
            (output_dir / CHECKPOINT_STATE).write_text(
                json.dumps(state, indent=2) + "\n", encoding="utf-8"
            )

    return EpochCheckpoint()


def _progress_callback(
    on_progress: ProgressCallback, steps_per_epoch: int, initial_epoch: int, epochs: int
) -> Any:
    keras = _keras()
    total = (epochs - initial_epoch) * steps_per_epoch

    class ReportProgress(keras.callbacks.Callback):
        epoch = initial_epoch

        def on_epoch_begin(
            self,
            epoch: int,
            logs: dict[str, Any] | None = None,  # noqa: ARG002  (Keras's signature)
        ) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            done = (self.epoch - initial_epoch) * steps_per_epoch + batch + 1
            metrics = {"epoch": float(self.epoch + 1)}
            if logs and "loss" in logs:
                metrics["loss"] = float(logs["loss"])
            on_progress(done, total, metrics)

    return ReportProgress()


def _resume_state(output_dir: Path, meta: dict[str, Any]) -> int:
    state_path = output_dir / CHECKPOINT_STATE
    weights_path = output_dir / CHECKPOINT_WEIGHTS
    if not state_path.is_file() or not weights_path.is_file():
        return 0
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        done = int(state["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbedderTrainingError(f"{state_path}: unreadable checkpoint state: {exc}") from None
    for key in ("input_size", "loss", "trainable_layers"):
        if key in state and state.get(key) != meta[key]:
            raise EmbedderTrainingError(
                f"{state_path}: checkpoint was trained with {key} {state.get(key)}, not {meta[key]}"
            )
    return done


def train_embedder(
    data_dir: Path | str,
    output_dir: Path | str,
    *,
    weights: str = "imagenet",
    epochs: int = 1,
    batch_size: int = 16,
    input_size: int = 224,
    limit: int | None = None,
    learning_rate: float = 1e-4,
    loss: str = "article",
    trainable_layers: int | str | None = TRAINABLE_TAIL,
    crop_to_box: float = 0.0,
    augment: bool = False,
    resume: bool = False,
    bundle_dir: Path | str | None = None,
    zip_bundle: bool = False,
    verbose: int | str = 1,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
) -> EmbedderTrainingResult:
    """Train; returns where the backbone weights went and the Keras history of this call.

    ``weights``: the backbone's start: 'imagenet' (download), 'random' or a ``.weights.h5``
    file of a ResNet50(include_top=False, pooling='avg'). ``loss``: article, metric or both.
    ``trainable_layers``: a count of last layers, or 'all'/None. ``crop_to_box``: the share of
    training photos cut to their annotated box; ``augment``: random resized crops and flips
    of training photos (see :func:`load_batch`). ``limit`` caps the
    train and val sample counts (smoke runs). ``on_progress`` is called after every training
    batch with (batches done, batches in this call's epochs, ``{"epoch": ..., "loss": ...}``;
    the epoch counts from 1, the loss is the epoch's running mean). Raises
    :class:`DatasetError` or :class:`EmbedderTrainingError` on bad input before training
    starts.
    """
    from training.metric_loss import PROXY_LAYER

    if epochs < 1 or batch_size < 1 or input_size < 32:
        raise EmbedderTrainingError("--epochs and --batch-size must be >= 1, --input-size >= 32")
    if loss not in LOSSES:
        raise EmbedderTrainingError(f"unknown --loss {loss!r}: one of {', '.join(LOSSES)}")
    tail = None if trainable_layers is None else parse_trainable_layers(trainable_layers)
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    data = read_training_data(data_dir)
    train, val = data.train, data.val
    if limit is not None:
        train, val = train[:limit], val[:limit]
    if not train:
        raise EmbedderTrainingError(f"{data_dir}: no 'train' images in the partition file")
    outputs = []
    if loss in ("article", "both"):
        unboxed = next((s for s in train + val if s.bbox is None), None)
        if unboxed is not None:
            raise EmbedderTrainingError(
                f"{unboxed.image_path}: no box, and the article's box head needs one (In-shop: "
                "Anno/list_bbox_inshop.txt); --loss metric needs none"
            )
        outputs += ["img", "bbox"]
    if loss in ("metric", "both"):
        outputs.append(PROXY_LAYER)
    output_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "input_size": input_size,
        "weights": str(weights),
        "data": str(data_dir),
        "layout": data.layout,
        "loss": loss,
        "crop_to_box": crop_to_box,
        "augment": augment,
        "trainable_layers": ALL_LAYERS if tail is None else tail,
    }

    initial_epoch = _resume_state(output_dir, meta) if resume else 0
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model, backbone = build_models(
        str(weights), input_size, loss=loss, trainable_layers=tail, num_groups=data.num_groups
    )
    compile_model(model, learning_rate)
    if initial_epoch:
        # Build the optimizer's slots first, so the checkpoint's Adam state is restored too.
        model.optimizer.build(model.trainable_variables)
        model.load_weights(str(output_dir / CHECKPOINT_WEIGHTS))
        log.info("resuming after epoch %d of %d", initial_epoch, epochs)

    history: dict[str, list[float]] = {}
    if initial_epoch < epochs:
        train_batches = make_dataset(
            train,
            batch_size,
            input_size,
            shuffle=True,
            seed=seed,
            outputs=outputs,
            crop_share=crop_to_box,
            augment=augment,
        )
        callbacks = [_checkpoint_callback(model, output_dir, meta)]
        if on_progress is not None:
            callbacks.append(
                _progress_callback(on_progress, len(train_batches), initial_epoch, epochs)
            )
        fit = model.fit(
            train_batches,
            validation_data=(
                make_dataset(val, batch_size, input_size, shuffle=False, outputs=outputs)
                if val
                else None
            ),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
        )
        history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    backbone_path = output_dir / BACKBONE_WEIGHTS
    backbone.save_weights(str(backbone_path))

    written_bundle = None
    if bundle_dir is not None:
        from training.bundle_writer import update_bundle

        provenance = {
            "embedder": {
                **meta,
                "epochs": epochs,
                "limit": limit,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "keras_backend": keras.config.backend(),
            }
        }
        update_bundle(
            bundle_dir,
            embedder_weights=backbone_path,
            input_size=input_size,
            provenance=provenance,
            zip_bundle=zip_bundle,
        )
        written_bundle = Path(bundle_dir)
    return EmbedderTrainingResult(
        backbone_path, tuple(range(initial_epoch + 1, epochs + 1)), history, written_bundle
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train_embedder",
        description="Fine-tune the ResNet50 embedder on DeepFashion.",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="DeepFashion Category and Attribute Prediction or In-shop folder",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("var/train/embedder"),
        help="checkpoints and backbone.weights.h5 go here",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="backbone start: imagenet (download), random, or a .weights.h5",
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most N train and N val images"
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default="article",
        help="article: category + box heads (default); metric: Proxy-Anchor on "
        "the pooled embedding; both",
    )
    parser.add_argument(
        "--trainable-layers",
        default=str(TRAINABLE_TAIL),
        help=f"last N backbone layers train (default {TRAINABLE_TAIL}, the "
        "article's), or 'all' (from random weights)",
    )
    parser.add_argument(
        "--crop-to-box",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of training photos cut to their annotated box, as the "
        "workers embed detected garments (default 0)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="random resized crops (3/4 to all of each side) and left-right flips of training "
        "photos (the article's recipe had none)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue after the last completed epoch in --output"
    )
    parser.add_argument("--bundle", type=Path, help="write the backbone into this bundle")
    parser.add_argument("--zip", action="store_true", help="also write <bundle>.zip")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from shared.ml.bundle import BundleError
    from training.bundle_writer import BundleWriteError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.zip and args.bundle is None:
        parser.error("--zip needs --bundle")
    try:
        result = train_embedder(
            args.data,
            args.output,
            weights=args.weights,
            epochs=args.epochs,
            batch_size=args.batch_size,
            input_size=args.input_size,
            limit=args.limit,
            learning_rate=args.lr,
            loss=args.loss,
            trainable_layers=args.trainable_layers,
            crop_to_box=args.crop_to_box,
            augment=args.augment,
            resume=args.resume,
            bundle_dir=args.bundle,
            zip_bundle=args.zip,
            seed=args.seed,
        )
    except (DatasetError, EmbedderTrainingError, BundleError, BundleWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(result.bundle_dir or result.backbone_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
