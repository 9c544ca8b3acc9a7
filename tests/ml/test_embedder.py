"""Keras ResNet50 embeddings: shape, determinism, batching, weights across backends, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.ml.bundle import BundleError

pytestmark = pytest.mark.ml
ROOT = Path(__file__).resolve().parents[2]
SIZE = 64


@pytest.fixture(scope="module")
def embedder(test_bundle):
    from shared.ml.embedder import Embedder

    return Embedder(test_bundle.embedder_weights, SIZE, device="cpu", backend="torch", batch_size=4)


def test_vectors_are_2048_float32_and_repeatable(embedder, catalogue_photos) -> None:
    first = embedder.embed([catalogue_photos[0], catalogue_photos[0]])
    again = embedder.embed([catalogue_photos[0]])
    assert first.shape == (2, 2048) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).sum() > 0
    assert np.array_equal(first[0], first[1])
    np.testing.assert_allclose(again[0], first[0], rtol=1e-4, atol=1e-4)
    other = embedder.embed([catalogue_photos[1]])
    assert not np.allclose(other[0], first[0])


def test_a_batch_gives_the_same_vectors_as_one_by_one(embedder, catalogue_photos) -> None:
    # Mixed shapes, and more images than one predict batch (batch_size=4).
    photos = [*catalogue_photos, np.ascontiguousarray(catalogue_photos[0][20:150, 30:90])]
    batched = embedder.embed(photos)
    single = np.stack([embedder.embed([p])[0] for p in photos])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)


def test_random_weights_are_seeded(catalogue_photos) -> None:
    from shared.ml.embedder import Embedder

    a = Embedder("random", SIZE, seed=7, backend="torch").embed(catalogue_photos[:1])
    b = Embedder("random", SIZE, seed=7, backend="torch").embed(catalogue_photos[:1])
    np.testing.assert_array_equal(a, b)


def test_missing_or_unreadable_weights_name_the_file(tmp_path: Path) -> None:
    from shared.ml.embedder import Embedder

    missing = tmp_path / "gone.weights.h5"
    with pytest.raises(BundleError, match=str(missing)):
        Embedder(str(missing), SIZE, backend="torch")
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(BundleError, match=str(broken)):
        Embedder(str(broken), SIZE, backend="torch")


_OTHER_BACKEND = """
import json, sys
import numpy as np
from shared.ml.embedder import Embedder, build_backbone
args = json.loads(sys.argv[1])
photos = list(np.load(args["photos"]))
emb = Embedder(args["weights"], args["size"], backend="tensorflow")
assert emb.backend == "tensorflow", emb.backend
np.save(args["vectors_out"], emb.embed(photos))
model = build_backbone("random", (args["size"], args["size"], 3), seed=99)
model.save_weights(args["weights_out"])
np.save(args["own_vectors_out"],
        Embedder(args["weights_out"], args["size"], backend="tensorflow").embed(photos))
"""


def test_weights_move_between_keras_backends(
    embedder, test_bundle, catalogue_photos, tmp_path: Path
) -> None:
    from shared.ml.embedder import Embedder

    photos = np.stack(catalogue_photos[:3])
    np.save(tmp_path / "photos.npy", photos)
    args = {
        "photos": str(tmp_path / "photos.npy"),
        "weights": test_bundle.embedder_weights,
        "size": SIZE,
        "vectors_out": str(tmp_path / "tf_vectors.npy"),
        "weights_out": str(tmp_path / "tf_saved.weights.h5"),
        "own_vectors_out": str(tmp_path / "tf_own_vectors.npy"),
    }
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND, json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # Saved under torch (the bundle), loaded under tensorflow.
    np.testing.assert_allclose(
        np.load(tmp_path / "tf_vectors.npy"), embedder.embed(photos), rtol=1e-4, atol=1e-4
    )
    # Saved under tensorflow, loaded under torch.
    here = Embedder(args["weights_out"], SIZE, backend="torch").embed(photos)
    np.testing.assert_allclose(here, np.load(tmp_path / "tf_own_vectors.npy"), rtol=1e-4, atol=1e-4)
