"""The workers' blocked nearest-rows kernel: torch (the CUDA path, run here on the CPU) and BLAS
select and rank alike, and both equal a float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest

from shared.search.knn import squared_norms
from tests.recommendations.helpers import tie_heavy_vectors
from workers.search.kernels import all_nearest_rows, nearest_rows


def _brute_force(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, skip: int, width: int):
    d2 = ((vectors.astype(np.float64) - query.astype(np.float64)) ** 2).sum(axis=1)
    order = [r for r in np.lexsort((ids, d2)) if r != skip][:width]
    return order, d2[order]


@pytest.mark.parametrize("kind", ["gaussian", "ties"])
def test_torch_and_blas_estimates_give_the_brute_force_answer(kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "gaussian":
        vectors = rng.standard_normal((300, 64)).astype(np.float32)
    else:
        vectors = tie_heavy_vectors(rng, 300, 4)  # many duplicates: ties broken by item id
    ids = rng.permutation(5_000)[:300].astype(np.int64)
    queries = vectors[:40]
    self_rows = np.arange(40, dtype=np.int64)
    width = 25
    answers = {
        device: nearest_rows(
            vectors,
            squared_norms(vectors),
            ids,
            queries,
            width,
            self_rows,
            block_rows=16,
            device=device,
        )
        for device in ("numpy", "cpu")
    }
    for i in range(40):
        want_rows, want_d2 = _brute_force(vectors, ids, queries[i], i, width)
        for answer in answers.values():
            assert answer.counts[i] == width
            assert answer.rows[i].tolist() == want_rows
            np.testing.assert_allclose(answer.sq_distances[i], want_d2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("kind", "n", "width", "dim"),
    [
        ("gaussian", 301, 25, 64),
        ("ties", 301, 25, 4),
        # About 100 twins of every vector: more ties than a row keeps, so rows are recomputed.
        ("ties", 301, 25, 1),
        ("gaussian", 40, 60, 64),
        ("ties", 90, 80, 4),
    ],
    ids=str,
)
def test_the_symmetric_pass_over_every_row_gives_the_brute_force_answer(
    kind: str, n: int, width: int, dim: int
) -> None:
    rng = np.random.default_rng(8)
    if kind == "gaussian":
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
    else:
        vectors = tie_heavy_vectors(rng, n, dim)
    ids = rng.permutation(5_000)[:n].astype(np.int64)
    # Blocks that do not divide n, so the last block and the transposed slices are ragged.
    answer = all_nearest_rows(vectors, squared_norms(vectors), ids, width, block_rows=32)
    for i in range(n):
        want_rows, want_d2 = _brute_force(vectors, ids, vectors[i], i, width)
        assert answer.counts[i] == len(want_rows)
        assert answer.rows[i, : len(want_rows)].tolist() == want_rows
        np.testing.assert_allclose(
            answer.sq_distances[i, : len(want_rows)], want_d2, rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("seed", range(10))
def test_the_full_computation_equals_brute_force_on_random_catalogues(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many tiles per block, ragged edges, duplicates and exact ties: every list as brute force."""
    from workers.search import kernels, tiles

    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(30, 260))
    dim = int(rng.choice([1, 2, 3, 8, 33]))
    if seed % 2:
        vectors = tie_heavy_vectors(rng, n, dim)  # integer coordinates: exact ties everywhere
    else:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        twins = rng.choice(n, size=n // 5, replace=False)
        vectors[twins] = vectors[rng.choice(n, size=twins.size)]  # exact duplicates
    ids = rng.permutation(10_000)[:n].astype(np.int64)
    width = int(rng.integers(1, 40))
    # Tiles narrower than a block and pools of a few slots, so that on these small catalogues
    # pools fill, compact, take single hits from both sides and lose rows to ties, as they do
    # at scale.
    monkeypatch.setattr(tiles, "TILE_COLS", int(rng.integers(5, 40)))
    monkeypatch.setattr(kernels, "_SPARE", int(rng.integers(0, 6)))
    monkeypatch.setattr(kernels, "_SLOTS", int(rng.integers(1, 12)))
    answer = all_nearest_rows(
        vectors, squared_norms(vectors), ids, width, block_rows=int(rng.integers(3, 50))
    )
    for i in range(n):
        want_rows, want_d2 = _brute_force(vectors, ids, vectors[i], i, width)
        assert answer.counts[i] == len(want_rows)
        assert answer.rows[i, : len(want_rows)].tolist() == want_rows
        np.testing.assert_allclose(
            answer.sq_distances[i, : len(want_rows)], want_d2, rtol=1e-9, atol=1e-9
        )
