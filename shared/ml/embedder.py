"""Garment embedder: Keras ResNet50 (no top, global average pooling) -> 2048 float32 per image.

Runs on whichever Keras backend the process chose; the backend is fixed when keras is first
imported, so :func:`import_keras` sets ``KERAS_BACKEND`` (workers: torch, see
docs/architecture.md#keras-on-torch) before that first import. On the torch backend inference
runs under ``torch.no_grad()``: without it ResNet50 keeps autograd state (3 s and 10 GB for a
batch of 16 on this machine).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shared.ml.bundle import RANDOM_EMBEDDER_SEED, Bundle, BundleError
from shared.ml.preprocess import letterbox_batch

log = logging.getLogger(__name__)

EMBEDDING_DIM = 2048
# Pictures per forward pass. ResNet50 at 224 px on this 2-core CPU: 0.10 s/picture at 8-16, but
# 0.16 at 32 and 0.24 at 48 (cache misses); a GPU wants large batches.
DEFAULT_EMBED_BATCH = {"cpu": 8, "cuda": 64}


def import_keras(backend: str | None = None) -> Any:
    """``keras``, imported with ``backend`` if this is the process's first keras import."""
    if "keras" not in sys.modules:
        if backend:
            os.environ["KERAS_BACKEND"] = backend
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "torch":
            # torch before anything TensorFlow-related: TF then triton in one process segfaults.
            import torch  # noqa: F401
    import keras

    active = keras.config.backend()
    if backend and active != backend:
        log.warning(
            "keras was already imported with the %s backend; KERAS_BACKEND=%s is ignored",
            active,
            backend,
            extra={"keras_backend": active},
        )
    return keras


@contextlib.contextmanager
def _seeded(keras: ModuleType, seed: int) -> Iterator[None]:
    """Seed Keras for a reproducible random init, then give back Python's and NumPy's state."""
    py_state, np_state = random.getstate(), np.random.get_state()
    fork: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if keras.config.backend() == "torch":
        import torch

        fork = torch.random.fork_rng(devices=[])
    with fork:
        keras.utils.set_random_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _keras_device(keras: ModuleType, device: str) -> str:
    if keras.config.backend() == "torch":
        return device
    return "gpu:0" if device == "cuda" else "cpu:0"


def build_backbone(
    weights: str,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    *,
    seed: int = RANDOM_EMBEDDER_SEED,
    backend: str | None = None,
) -> Any:
    """ResNet50(include_top=False, pooling='avg') with ``weights``: a file, imagenet or random.

    Nothing falls back: a missing or unreadable file, or imagenet weights that cannot be
    fetched, raise :class:`BundleError` naming what failed.
    """
    keras = import_keras(backend)
    resnet = keras.applications.ResNet50
    if weights == "random":
        with _seeded(keras, seed):
            return resnet(include_top=False, weights=None, pooling="avg", input_shape=input_shape)
    if weights == "imagenet":
        try:
            return resnet(
                include_top=False, weights="imagenet", pooling="avg", input_shape=input_shape
            )
        except Exception as exc:
            raise BundleError(
                f"embedder weights 'imagenet' could not be obtained (Keras downloads them; this "
                f"machine may be offline): {type(exc).__name__}: {exc}"
            ) from exc
    path = Path(weights)
    if not path.is_file():
        raise BundleError(f"embedder weights {path} are missing")
    model = resnet(include_top=False, weights=None, pooling="avg", input_shape=input_shape)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise BundleError(
            f"embedder weights {path} cannot be loaded into ResNet50 "
            f"(include_top=False, pooling='avg'): {type(exc).__name__}: {exc}"
        ) from exc
    return model


class Embedder:
    """Batched embeddings of RGB ``uint8`` images, letterboxed to ``input_size``."""

    def __init__(
        self,
        weights: str,
        input_size: int = 224,
        *,
        device: str = "cpu",
        seed: int = RANDOM_EMBEDDER_SEED,
        backend: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.weights = weights
        self.input_size = int(input_size)
        if batch_size is None:
            batch_size = DEFAULT_EMBED_BATCH.get(device.split(":")[0], 8)
        self.batch_size = max(1, int(batch_size))
        self.keras = import_keras(backend)
        self.backend = self.keras.config.backend()
        self.device = _keras_device(self.keras, device)
        from keras.applications.resnet50 import preprocess_input

        self._preprocess = preprocess_input
        with self.keras.device(self.device):
            self.model = build_backbone(
                weights, (self.input_size, self.input_size, 3), seed=seed, backend=backend
            )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        device: str = "cpu",
        *,
        backend: str | None = None,
        batch_size: int | None = None,
    ) -> Embedder:
        return cls(
            bundle.embedder_weights,
            bundle.input_size,
            device=device,
            seed=bundle.embedder_seed,
            backend=backend,
            batch_size=batch_size,
        )

    def _no_grad(self) -> contextlib.AbstractContextManager[Any]:
        if self.backend == "torch":
            import torch

            return torch.no_grad()
        return contextlib.nullcontext()

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(n, 2048)`` float32 vectors for RGB ``uint8`` images of any size."""
        out = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = self._preprocess(letterbox_batch(chunk, self.input_size))
            with self._no_grad(), self.keras.device(self.device):
                vectors = self.model.predict_on_batch(batch)
            out[start : start + len(chunk)] = np.asarray(vectors, dtype=np.float32)
        return out
