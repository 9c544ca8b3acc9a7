"""Fine-tune the embedder (the article's ResNet50 recipe) on DeepFashion categories and boxes.

Usage::

    python -m training.train_embedder --data DIR --output DIR [--weights imagenet|random|FILE]
        [--epochs N] [--batch-size N] [--input-size PX] [--limit N] [--lr X] [--resume]
        [--bundle DIR [--zip]]

``--data`` is the DeepFashion Category and Attribute Prediction layout (see
:mod:`training.deepfashion`). The model is the article's: ResNet50 (no top, average pooling)
with all but its last 12 layers frozen (BatchNormalization kept in inference mode), a 46-way
category head ``img`` (Dense 512 elu -> Dense 46 softmax) and a box head ``bbox`` (Dense 512
relu -> Dense 128 relu -> Dense 4), L2 0.001 on the hidden layers. Boxes are x1, y1, x2, y2
divided by the image's width and height.
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
from typing import Any

import numpy as np

from training.deepfashion import NUM_CATEGORIES, CategorySample, DatasetError, read_category_dataset

log = logging.getLogger(__name__)

TRAINABLE_TAIL = 12  # the article: `for layer in model_resnet.layers[:-12]: trainable = False`
L2 = 0.001
CHECKPOINT_WEIGHTS = "checkpoint.weights.h5"
CHECKPOINT_STATE = "checkpoint.json"
BACKBONE_WEIGHTS = "backbone.weights.h5"
EXIT_USER_ERROR = 2


class EmbedderTrainingError(Exception):
    """Bad arguments or files, reported without a traceback."""


@dataclass(frozen=True)
class EmbedderTrainingResult:
    backbone_weights: Path
    epochs_run: tuple[int, ...]  # 1-based epoch numbers run by this call
    history: dict[str, list[float]]
    bundle_dir: Path | None


def _keras() -> Any:
    from shared.ml.embedder import import_keras

    return import_keras()


def build_models(weights: str, input_size: int) -> tuple[Any, Any]:
    """(training model with heads ``img`` and ``bbox``, its ResNet50 backbone)."""
    from shared.ml.embedder import build_backbone

    keras = _keras()
    layers, regularizers = keras.layers, keras.regularizers
    backbone = build_backbone(weights, (input_size, input_size, 3))
    for layer in backbone.layers[:-TRAINABLE_TAIL]:
        layer.trainable = False
    for layer in backbone.layers[-TRAINABLE_TAIL:]:
        # Unlike the article, BatchNormalization stays in inference mode (Keras's fine-tuning
        # advice): its statistics from small fine-tuning batches are noisy, and a trained
        # gamma/beta under batch statistics does not match the moving statistics used at
        # inference. Measured here: with trainable BN the loss on a fixed batch rose after an
        # epoch; with it frozen it fell.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    features = backbone.output
    x = layers.Dense(512, activation="elu", kernel_regularizer=regularizers.L2(L2))(features)
    category = layers.Dense(NUM_CATEGORIES, activation="softmax", name="img")(x)
    b = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.L2(L2))(features)
    b = layers.Dense(128, activation="relu", kernel_regularizer=regularizers.L2(L2))(b)
    box = layers.Dense(4, kernel_initializer="normal", name="bbox")(b)
    model = keras.Model(inputs=backbone.input, outputs=[category, box])
    return model, backbone


def compile_model(model: Any, learning_rate: float) -> None:
    keras = _keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss={"img": "sparse_categorical_crossentropy", "bbox": "mse"},
        metrics={"img": ["accuracy"], "bbox": ["mae"]},
    )


def load_batch(samples: Sequence[CategorySample], input_size: int,
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Preprocessed pixels and targets (label index, box / image size) for some samples."""
    _keras()  # fixes the backend before keras.applications is imported
    from keras.applications.resnet50 import preprocess_input
    from PIL import Image, UnidentifiedImageError

    from shared.ml.preprocess import letterbox_batch

    images, labels, boxes = [], [], []
    for sample in samples:
        try:
            with Image.open(sample.image_path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(sample.image_path, f"cannot read image: {exc}") from None
        height, width = rgb.shape[:2]
        x1, y1, x2, y2 = sample.bbox
        boxes.append(np.clip([x1 / width, y1 / height, x2 / width, y2 / height], 0.0, 1.0))
        labels.append(sample.label)
        images.append(rgb)
    pixels = preprocess_input(letterbox_batch(images, input_size))
    targets = {"img": np.asarray(labels, dtype=np.int32),
               "bbox": np.asarray(boxes, dtype=np.float32)}
    return pixels, targets


def make_dataset(samples: Sequence[CategorySample], batch_size: int, input_size: int, *,
                 shuffle: bool, seed: int = 0) -> Any:
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
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            return load_batch([self.samples[i] for i in chosen], input_size)

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
            state = {**meta, "epochs_done": epoch + 1,
                     "logs": {k: float(v) for k, v in (logs or {}).items()}}
            (output_dir / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2) + "\n",
                                                       encoding="utf-8")

    return EpochCheckpoint()


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
    if state.get("input_size") != meta["input_size"]:
        raise EmbedderTrainingError(
            f"{state_path}: checkpoint was trained at input size {state.get('input_size')}, "
            f"not {meta['input_size']}")
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
    resume: bool = False,
    bundle_dir: Path | str | None = None,
    zip_bundle: bool = False,
    verbose: int | str = 1,
    seed: int = 0,
) -> EmbedderTrainingResult:
    """Train; returns where the backbone weights went and the Keras history of this call.

    ``weights``: the backbone's start: 'imagenet' (download), 'random' or a ``.weights.h5``
    file of a ResNet50(include_top=False, pooling='avg'). ``limit`` caps the train and val
    sample counts (smoke runs). Raises :class:`DatasetError` or
    :class:`EmbedderTrainingError` on bad input before training starts.
    """
    if epochs < 1 or batch_size < 1 or input_size < 32:
        raise EmbedderTrainingError("--epochs and --batch-size must be >= 1, --input-size >= 32")
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    splits = read_category_dataset(data_dir)
    train, val = splits["train"], splits["val"]
    if limit is not None:
        train, val = train[:limit], val[:limit]
    if not train:
        raise EmbedderTrainingError(f"{data_dir}: no 'train' images in the partition file")
    output_dir.mkdir(parents=True, exist_ok=True)
    meta = {"input_size": input_size, "weights": str(weights), "data": str(data_dir)}

    initial_epoch = _resume_state(output_dir, meta) if resume else 0
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model, backbone = build_models(str(weights), input_size)
    compile_model(model, learning_rate)
    if initial_epoch:
        # Build the optimizer's slots first, so the checkpoint's Adam state is restored too.
        model.optimizer.build(model.trainable_variables)
        model.load_weights(str(output_dir / CHECKPOINT_WEIGHTS))
        log.info("resuming after epoch %d of %d", initial_epoch, epochs)

    history: dict[str, list[float]] = {}
    if initial_epoch < epochs:
        fit = model.fit(
            make_dataset(train, batch_size, input_size, shuffle=True, seed=seed),
            validation_data=(make_dataset(val, batch_size, input_size, shuffle=False)
                             if val else None),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[_checkpoint_callback(model, output_dir, meta)],
            verbose=verbose,
        )
        history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    backbone_path = output_dir / BACKBONE_WEIGHTS
    backbone.save_weights(str(backbone_path))

    written_bundle = None
    if bundle_dir is not None:
        from training.bundle_writer import update_bundle

        provenance = {"embedder": {**meta, "epochs": epochs, "limit": limit,
                                   "learning_rate": learning_rate,
                                   "keras_backend": keras.config.backend()}}
        update_bundle(bundle_dir, embedder_weights=backbone_path, input_size=input_size,
                      provenance=provenance, zip_bundle=zip_bundle)
        written_bundle = Path(bundle_dir)
    return EmbedderTrainingResult(backbone_path, tuple(range(initial_epoch + 1, epochs + 1)),
                                  history, written_bundle)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_embedder",
                                     description="Fine-tune the ResNet50 embedder on DeepFashion.")
    parser.add_argument("--data", required=True, type=Path,
                        help="DeepFashion Category and Attribute Prediction folder")
    parser.add_argument("--output", type=Path, default=Path("var/train/embedder"),
                        help="checkpoints and backbone.weights.h5 go here")
    parser.add_argument("--weights", default="imagenet",
                        help="backbone start: imagenet (download), random, or a .weights.h5")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=None,
                        help="use at most N train and N val images")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    parser.add_argument("--resume", action="store_true",
                        help="continue after the last completed epoch in --output")
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
            args.data, args.output, weights=args.weights, epochs=args.epochs,
            batch_size=args.batch_size, input_size=args.input_size, limit=args.limit,
            learning_rate=args.lr, resume=args.resume, bundle_dir=args.bundle,
            zip_bundle=args.zip, seed=args.seed,
        )
    except (DatasetError, EmbedderTrainingError, BundleError, BundleWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(result.bundle_dir or result.backbone_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
