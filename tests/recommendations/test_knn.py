"""The in-memory top-k equals a float64 brute force, ties and duplicates included."""

from __future__ import annotations

import numpy as np
import pytest

from shared.search.knn import squared_norms, top_k
from tests.recommendations.helpers import brute_force, tie_heavy_vectors


def _check(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, exclude=None):
    rows = [(int(ids[i]), str(int(ids[i])), vectors[i]) for i in range(len(ids))]
    exclude_rows = None if exclude is None else np.flatnonzero(ids == exclude)
    got = top_k(vectors, squared_norms(vectors), ids, query, k, exclude_rows=exclude_rows)
    want = brute_force(rows, query, k, exclude_item_id=exclude)
    assert [str(int(ids[r])) for r in got.rows] == [sku for sku, _ in want]
    np.testing.assert_allclose(got.distances, [d for _, d in want], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_random_gaussian_vectors_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((500, 2048)).astype(np.float32)
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    order = np.argsort(ids)
    vectors, ids = vectors[order], ids[order]
    for k in (1, 10, 100):
        _check(vectors, ids, vectors[7], k, exclude=int(ids[7]))
        _check(vectors, ids, rng.standard_normal(2048).astype(np.float32), k)


@pytest.mark.parametrize("seed", range(5))
def test_duplicates_and_ties_are_ordered_by_item_id(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    vectors = tie_heavy_vectors(rng, 400, 4)  # 81 distinct vectors: many duplicates
    ids = np.arange(1, 401, dtype=np.int64) * 3
    for k in (1, 5, 37, 100):
        _check(vectors, ids, vectors[0], k, exclude=int(ids[0]))
        _check(vectors, ids, tie_heavy_vectors(rng, 1, 4)[0], k)


def test_clustered_vectors_with_large_norms_match_brute_force() -> None:
    # Neighbours far closer to each other than to the origin: float32 cancellation territory.
    rng = np.random.default_rng(7)
    centre = rng.standard_normal(2048).astype(np.float32) * 100
    vectors = (centre + rng.standard_normal((300, 2048)).astype(np.float32) * 0.01).astype(
        np.float32
    )
    ids = np.arange(300, dtype=np.int64)
    _check(vectors, ids, vectors[3], 10, exclude=3)


def test_k_larger_than_catalogue_returns_everyone_else() -> None:
    vectors = np.eye(5, dtype=np.float32)
    ids = np.arange(5, dtype=np.int64)
    got = top_k(vectors, squared_norms(vectors), ids, vectors[2], 100, exclude_rows=np.array([2]))
    assert sorted(got.rows.tolist()) == [0, 1, 3, 4]
    assert got.rows.tolist() == [0, 1, 3, 4]  # all at sqrt(2): by item id


def test_empty_matrix_returns_nothing() -> None:
    vectors = np.empty((0, 8), dtype=np.float32)
    got = top_k(vectors, squared_norms(vectors), np.empty(0, np.int64), np.ones(8, np.float32), 3)
    assert got.rows.size == 0
