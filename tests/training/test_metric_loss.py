"""Proxy-Anchor metric learning in keras.ops: the loss itself, and that it learns to retrieve."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ml


def keras_torch():
    from shared.ml.embedder import import_keras

    return import_keras("torch")


def reference_proxy_anchor(
    x: np.ndarray, labels: np.ndarray, proxies: np.ndarray, alpha: float = 32.0, margin: float = 0.1
) -> float:
    """Kim et al. 2020, eq. 4, straight from the paper with loops."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    p = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    cos = x @ p.T
    with_positives = [c for c in range(len(p)) if (labels == c).any()]
    pos = sum(
        np.log1p(
            sum(np.exp(-alpha * (cos[i, c] - margin)) for i in range(len(x)) if labels[i] == c)
        )
        for c in with_positives
    ) / len(with_positives)
    neg = sum(
        np.log1p(sum(np.exp(alpha * (cos[i, c] + margin)) for i in range(len(x)) if labels[i] != c))
        for c in range(len(p))
    ) / len(p)
    return float(pos + neg)


def test_loss_matches_the_papers_formula() -> None:
    keras = keras_torch()
    from training.metric_loss import proxy_anchor_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 16)).astype(np.float32)
    proxies = rng.normal(size=(6, 16)).astype(np.float32)
    labels = np.array([0, 0, 1, 2, 2, 2, 3, 1, 0, 3])  # classes 4 and 5: no sample here
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pn = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    got = proxy_anchor_loss(
        keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(xn @ pn.T)
    )
    assert float(keras.ops.convert_to_numpy(got)) == pytest.approx(
        reference_proxy_anchor(x, labels, proxies), rel=1e-4
    )


def test_samples_on_their_own_proxies_cost_less_than_on_anothers() -> None:
    keras = keras_torch()
    from training.metric_loss import proxy_anchor_loss

    proxies = np.eye(4, dtype=np.float32)
    labels = np.array([0, 1, 2, 3])
    right = proxy_anchor_loss(
        keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(proxies @ proxies.T)
    )
    swapped = proxies[[1, 0, 3, 2]]
    wrong = proxy_anchor_loss(
        keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(swapped @ proxies.T)
    )
    # Right: only the margin-widened pull of the orthogonal proxies is left (log1p(3 e^3.2)).
    assert float(keras.ops.convert_to_numpy(right)) == pytest.approx(
        np.log1p(3 * np.exp(3.2)), rel=1e-3
    )
    assert float(keras.ops.convert_to_numpy(wrong)) > float(keras.ops.convert_to_numpy(right)) + 20


def _recall_at_1(vectors: np.ndarray, classes: np.ndarray) -> float:
    d = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((classes[d.argmin(axis=1)] == classes).mean())


def test_training_an_embedding_with_it_lowers_the_loss_and_raises_recall() -> None:
    """Points of 20 classes hidden in 64-d noise: a Dense embedding learns to group them, and
    held-out points of the same classes are then retrieved by Euclidean distance."""
    keras = keras_torch()
    from training.metric_loss import proxy_anchor, proxy_similarity

    rng = np.random.default_rng(1)
    classes, dim = 20, 64
    centres = rng.normal(size=(classes, 4)) * 3
    mixing = rng.normal(size=(4, dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, size=n)
        signal = (centres[labels] + rng.normal(size=(n, 4)) * 0.3) @ mixing
        return (signal + rng.normal(size=(n, dim)) * 4).astype(np.float32), labels

    x_train, y_train = draw(800)
    x_test, y_test = draw(300)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((dim,))
    embedding = keras.layers.Dense(32, activation="relu", name="embedding")(inputs)
    similarity = proxy_similarity(classes)(embedding)
    assert tuple(similarity.shape) == (None, classes + 1)  # and the log norm
    model = keras.Model(inputs, similarity)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=proxy_anchor())
    embedder = keras.Model(inputs, embedding)

    before = _recall_at_1(np.asarray(embedder.predict(x_test, verbose=0)), y_test)
    history = model.fit(x_train, y_train, batch_size=64, epochs=8, verbose=0).history
    after = _recall_at_1(np.asarray(embedder.predict(x_test, verbose=0)), y_test)

    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert after > before + 0.2, (before, after)


def test_the_norm_term_evens_out_embedding_norms() -> None:
    """Euclidean retrieval needs alike norms: the loss charges for their spread."""
    keras = keras_torch()
    from training.metric_loss import proxy_anchor

    labels = np.array([0, 1, 0, 1])
    cosine = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.2, 0.8]], dtype=np.float32)
    loss = proxy_anchor()

    def value(norms: list[float]) -> float:
        y_pred = np.concatenate([cosine, np.log(np.array(norms, np.float32))[:, None]], axis=1)
        return float(keras.ops.convert_to_numpy(loss(labels, y_pred)))

    alike, spread = value([5.0, 5.0, 5.0, 5.0]), value([0.5, 5.0, 50.0, 5.0])
    assert alike == pytest.approx(value([7.0, 7.0, 7.0, 7.0]))  # the common scale is free
    assert spread == pytest.approx(alike + np.var(np.log([0.5, 5.0, 50.0, 5.0])), rel=1e-4)
