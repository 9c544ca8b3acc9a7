"""The exact dot products every distance goes through: one summation order on every tier.

The web tier sums in NumPy, the workers in the compiled lanes (shared/search/lane_dots.c); a
product page ranks a pending change by the web's distance against lists the workers ranked, so
the two must give the same bits, or twins at the same distance would be ordered by whichever
tier computed them instead of by item id.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from shared.search import dots
from shared.search.knn import exact_squared_distances, squared_norms64
from workers.search import kernels


def _awkward(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Rows over many magnitudes, signs, zeros, a subnormal and an exact duplicate."""
    x = rng.standard_normal((n, dim)) * np.exp(rng.standard_normal((n, dim)) * 4)
    x[rng.random(x.shape) < 0.1] = 0.0
    x = x.astype(np.float32)
    x[0, 0] = np.float32(1e-42)  # subnormal in float32, exact in float64
    x[1] = x[2]
    return x


def test_the_compiled_lanes_are_built_by_make_install():
    # scripts/install.sh builds them; without, the workers re-rank several times slower.
    assert dots.native_available()


@pytest.mark.parametrize("dim", [1, 7, 16, 33, 100, 2048])
def test_compiled_and_numpy_dots_agree_to_the_bit(dim):
    rng = np.random.default_rng(dim)
    x = _awkward(rng, 300, dim)
    rows = rng.integers(0, 300, 2001)
    qrows = rng.integers(0, 300, 2001)
    compiled = dots.pair_dots(x, rows, x, qrows)
    reference = dots.numpy_pair_dots(x, rows, x, qrows)
    assert compiled.view(np.uint64).tolist() == reference.view(np.uint64).tolist()


def test_a_pairs_dot_does_not_depend_on_the_side_the_batch_or_the_kernel():
    rng = np.random.default_rng(1)
    x = _awkward(rng, 64, 2048)
    rows = rng.integers(0, 64, 999)
    qrows = rng.integers(0, 64, 999)
    together = dots.pair_dots(x, rows, x, qrows)
    # Every query row serves many pairs here: the float64-query kernel runs.
    few = dots.pair_dots(x, rows, x[:4], qrows % 4)
    alone = np.array(
        [dots.pair_dots(x, rows[i : i + 1], x, qrows[i : i + 1])[0] for i in range(50)]
    )
    swapped = dots.pair_dots(x, qrows, x, rows)
    assert together.tobytes() == swapped.tobytes()
    assert together[:50].tobytes() == alone.tobytes()
    assert few.tobytes() == dots.numpy_pair_dots(x, rows, x[:4], qrows % 4).tobytes()


def test_dots_are_within_the_stated_error_of_the_exact_sum():
    rng = np.random.default_rng(2)
    x = _awkward(rng, 20, 300)
    got = dots.pair_dots(x, np.arange(10), x, np.arange(10, 20))
    for p in range(10):
        a, b = x[p].astype(np.float64), x[10 + p].astype(np.float64)
        exact = sum(
            (Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a, b, strict=True)),
            Fraction(0),
        )
        bound = 300 * 2.0**-53 * float(np.abs(a) @ np.abs(b))
        assert abs(Fraction(float(got[p])) - exact) <= Fraction(bound)


def test_distances_are_symmetric_and_duplicates_are_exactly_zero():
    rng = np.random.default_rng(3)
    x = _awkward(rng, 50, 2048)
    norms = squared_norms64(x)
    for i in (1, 5, 17):
        d = exact_squared_distances(x, x[i], norms)
        assert d[i] == 0.0
        for j in (3, 29):
            assert d[j] == exact_squared_distances(x[j : j + 1], x[i])[0]
            assert d[j] == exact_squared_distances(x, x[j], norms)[i]
    assert exact_squared_distances(x, x[2], norms)[1] == 0.0  # rows 1 and 2 are twins


def _rerank_oracle(x, ids, queries, candidates, width):
    norms = squared_norms64(x)
    rows, d2 = [], []
    for q, cand in zip(queries, candidates, strict=True):
        exact = exact_squared_distances(x[cand], q, norms[cand])
        order = np.lexsort((ids[cand], exact))[:width]
        rows.append(cand[order])
        d2.append(exact[order])
    return rows, d2


@pytest.mark.parametrize("pairs_per_call", [1 << 20, 7])
def test_rerank_equals_the_per_query_distances_and_order(monkeypatch, pairs_per_call):
    # 7 pairs a call: most queries go alone, chunk after chunk (the heavy-ties path).
    monkeypatch.setattr(kernels, "_RERANK_PAIRS", pairs_per_call)
    rng = np.random.default_rng(4)
    x = np.round(rng.standard_normal((400, 64)) * 2).astype(np.float32)  # many exact ties
    ids = rng.permutation(10_000)[:400].astype(np.int64)
    queries = x[:40]
    candidates = [
        np.sort(rng.choice(400, size=int(s), replace=False)) for s in rng.integers(0, 60, 40)
    ]
    ranked = kernels.rerank(x, squared_norms64(x), ids, queries, candidates, 12)
    rows, d2 = _rerank_oracle(x, ids, queries, candidates, 12)
    for i in range(40):
        count = len(rows[i])
        assert ranked.counts[i] == count
        assert ranked.rows[i, :count].tolist() == rows[i].tolist()
        assert ranked.sq_distances[i, :count].tobytes() == d2[i].tobytes()
        assert (ranked.rows[i, count:] == -1).all()
        assert np.isinf(ranked.sq_distances[i, count:]).all()
