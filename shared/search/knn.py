"""Exact k-nearest neighbours by Euclidean distance over a float32 matrix (numpy only).

The bulk of the work is ``||x||^2 - 2 X q + ||q||^2`` in float32 (one BLAS matrix-vector
product over the cached matrix, norms precomputed) and ``argpartition``. Float32 rounding can
reorder near-equal distances, so that pass only *selects* candidates: every row whose float32
estimate lies within a proven error margin of the k-th estimate. The few candidates are then
re-ranked with distances computed directly in float64 from their rows, and ties are broken by
item id. The result therefore equals a float64 brute force over the same vectors, while no
float64 copy of the whole matrix is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.search.dots import numpy_pair_dots, pair_dots, self_dots

_EPS32 = float(np.finfo(np.float32).eps)
# Exact re-ranking works on bounded slices so a pathological candidate set stays cheap in memory.
_RERANK_ROWS = 4096


@dataclass(frozen=True)
class Neighbours:
    """Rows of the matrix, nearest first, with their exact distances."""

    rows: np.ndarray  # int64
    distances: np.ndarray  # float64


def squared_norms(vectors: np.ndarray) -> np.ndarray:
    """Row-wise ``||x||^2`` as float32 (accumulated per row without a float64 copy)."""
    norms: np.ndarray = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)
    return norms


def squared_norms64(vectors: np.ndarray) -> np.ndarray:
    """Row-wise ``||x||^2`` in float64, summed in shared.search.dots' lane order."""
    return self_dots(vectors)


# Below this fraction of ||x||^2 + ||q||^2 the dot-product form loses too many digits to
# cancellation (near-duplicates): those rows are computed from their differences instead.
_CANCELLATION = 1e-3


def squared_distances_from_dots(
    x: np.ndarray,
    rows: np.ndarray,
    q: np.ndarray,
    qrows: np.ndarray,
    scale: np.ndarray,
    dots: np.ndarray,
) -> np.ndarray:
    """``||x[rows[p]] - q[qrows[p]]||^2`` from the pairs' ``dots`` and ``scale`` (the sum of the
    two squared norms): the one formula every exact distance goes through (shared.search.dots).

    Pairs closer than ``_CANCELLATION`` of their scale (near-duplicates) are recomputed from
    their differences, so duplicates come out exactly 0."""
    d2 = scale - 2.0 * dots
    close = np.flatnonzero(d2 <= _CANCELLATION * scale)
    if close.size:
        diff = x[rows[close]].astype(np.float64) - q[qrows[close]].astype(np.float64)
        at = np.arange(close.size, dtype=np.int64)
        d2[close] = numpy_pair_dots(diff, at, diff, at)
    np.maximum(d2, 0.0, out=d2)
    return d2


def exact_squared_distances(
    vectors: np.ndarray, query: np.ndarray, sq_norms64: np.ndarray | None = None
) -> np.ndarray:
    """``||x - q||^2`` in float64 for a set of rows: the one distance every answer uses.

    ``||x||^2 + ||q||^2 - 2 x.q`` with every product exact and every sum in float64, in the
    lane order of shared.search.dots (no float64 copy of the rows). Its absolute error is at
    most about ``d * 2^-53 * (||x||^2 + ||q||^2)``, i.e. below 1e-9 of the distance for every
    row it keeps; rows closer than ``_CANCELLATION`` of that scale (near-duplicates) are
    recomputed from ``x - q``, so duplicates come out exactly 0. With integer-valued vectors
    every step is exact. The same pair gives the same bits whichever side is the query and
    whatever else is in the call, on every tier.
    """
    m = vectors.shape[0]
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    xn = squared_norms64(vectors) if sq_norms64 is None else sq_norms64
    rows = np.arange(m, dtype=np.int64)
    qrows = np.zeros(m, dtype=np.int64)
    # The query's norm by the very same reduction as the rows': d(a, b) == d(b, a) to the bit.
    scale = xn + float(squared_norms64(q)[0])
    return squared_distances_from_dots(
        vectors, rows, q, qrows, scale, pair_dots(vectors, rows, q, qrows)
    )


def error_margin(sq_norms: np.ndarray, q_sq: float, dim: int) -> float:
    """How far two float32 estimates of squared distances to one query may be off, together."""
    # Each float32 estimate of ||x-q||^2 is off by at most about dim * eps * (||x||^2 + 2|x.q| +
    # ||q||^2) <= 2 * dim * eps * (||x||^2 + ||q||^2); two estimates are compared, hence 2x.
    largest = float(sq_norms.max()) if sq_norms.size else 0.0
    return 4.0 * dim * _EPS32 * (largest + q_sq) + 1e-30


def top_k(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    item_ids: np.ndarray,
    query: np.ndarray,
    k: int,
    exclude_rows: np.ndarray | None = None,
) -> Neighbours:
    """The ``k`` rows nearest to ``query``, ties broken by ``item_ids``; ``exclude_rows`` never.

    ``vectors`` is (n, d) float32, ``sq_norms`` its precomputed squared row norms.
    """
    n = vectors.shape[0]
    empty = Neighbours(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
    if n == 0 or k <= 0:
        return empty
    q = np.ascontiguousarray(query, dtype=np.float32)
    q_sq = float(np.dot(q.astype(np.float64), q.astype(np.float64)))
    approx = vectors @ q  # float32, n values: the only pass over the matrix
    approx *= -2.0
    approx += sq_norms
    approx += np.float32(q_sq)
    if exclude_rows is not None and len(exclude_rows):
        approx[exclude_rows] = np.inf
    np.maximum(approx, 0.0, out=approx)
    valid = n - (0 if exclude_rows is None else len(np.unique(exclude_rows)))
    if valid <= 0:
        return empty
    kk = min(k, valid)
    if kk < n:
        kth = float(np.partition(approx, kk - 1)[kk - 1])
    else:
        kth = float(approx[np.isfinite(approx)].max())
    limit = kth + error_margin(sq_norms, q_sq, vectors.shape[1])
    # Every row that could truly rank within k, including all ties at the boundary.
    candidates = np.flatnonzero(approx <= limit)
    exact = np.empty(candidates.size, dtype=np.float64)
    for start in range(0, candidates.size, _RERANK_ROWS):
        rows = candidates[start : start + _RERANK_ROWS]
        exact[start : start + rows.size] = exact_squared_distances(vectors[rows], q)
    order = np.lexsort((item_ids[candidates], exact))[:kk]
    return Neighbours(candidates[order].astype(np.int64), np.sqrt(exact[order]))
