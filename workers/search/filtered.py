"""Exact search restricted to the items that pass a filter, with product families.

The same two passes as shared.search.knn.top_k: float32 estimates select every row that could
rank within the first ``m`` (a proven error margin), float64 distances re-rank them, ties by
item id; the first ``m`` re-ranked rows are then exactly the first ``m`` of the order over the
allowed rows. Those are walked nearest first through the families (``distinct``,
``exclude_same``); when fewer than k survive, ``m`` grows (x4) and the walk goes on where it
stopped, until k are found or every allowed row has been walked. Estimates are computed once.

A selective filter gathers only its rows (chunked: no copy of the matrix); a broad one takes one
product over the whole matrix and masks the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from shared.search.filters import FamilyPicker, Key
from shared.search.knn import error_margin, exact_squared_distances

if TYPE_CHECKING:
    from workers.search.index import KindMatrix

_GATHER_ROWS = 4096
KeyReader = Callable[[np.ndarray], dict[int, tuple[Key | None, Key | None]]]


def _estimates(
    matrix: KindMatrix, query: np.ndarray, rows: np.ndarray | None, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(matrix rows searched, float32 estimates of their squared distances)."""
    q = np.ascontiguousarray(query, dtype=np.float32)
    q_sq = np.float32(np.dot(q.astype(np.float64), q.astype(np.float64)))
    if rows is None:
        universe = np.arange(matrix.n, dtype=np.int64)
        if exclude is not None and exclude.size:
            universe = np.setdiff1d(universe, exclude, assume_unique=True)
    else:
        universe = np.unique(rows)
        if exclude is not None and exclude.size:
            universe = np.setdiff1d(universe, exclude, assume_unique=True)
    if rows is None or universe.size * 2 > matrix.n:
        approx = matrix.live_vectors @ q
        approx = approx[universe] if universe.size != matrix.n else approx
    else:
        approx = np.empty(universe.size, dtype=np.float32)
        for start in range(0, universe.size, _GATHER_ROWS):
            chunk = universe[start : start + _GATHER_ROWS]
            # einsum, not BLAS: OpenBLAS runs a product this size on every core, and a query
            # worker's threads spinning on a busy machine cost ~4x the single-threaded loop
            # (1,000 rows of 2,048: ~6.5 ms of CPU against ~1.5). Any summation order stays
            # within error_margin, and the exact re-rank decides.
            approx[start : start + chunk.size] = np.einsum("ij,j->i", matrix.vectors[chunk], q)
    approx *= -2.0
    approx += matrix.live_norms[universe]
    approx += q_sq
    np.maximum(approx, 0.0, out=approx)
    return universe, approx


def filtered_top(
    matrix: KindMatrix,
    query: np.ndarray,
    rows: np.ndarray | None,
    exclude: np.ndarray | None,
    k: int,
    picker: FamilyPicker,
    keys: KeyReader | None,
) -> list[tuple[int, float]]:
    """The k nearest allowed rows (``rows``: None allows all) the families keep, nearest first,
    as (item id, distance); ``exclude`` rows never."""
    universe, approx = _estimates(matrix, query, rows, exclude)
    total = universe.size
    if total == 0 or k <= 0:
        return []
    q64 = query.astype(np.float64)
    margin = error_margin(matrix.live_norms, float(np.dot(q64, q64)), matrix.dim)
    found: list[tuple[int, float]] = []
    walked = 0
    m = k if keys is None else 2 * k
    while True:
        m = min(m, total)
        kth = float(np.partition(approx, m - 1)[m - 1]) if m < total else float(approx.max())
        candidates = np.flatnonzero(approx <= kth + margin)
        exact = np.empty(candidates.size, dtype=np.float64)
        for start in range(0, candidates.size, _GATHER_ROWS):
            chunk = candidates[start : start + _GATHER_ROWS]
            exact[start : start + chunk.size] = exact_squared_distances(
                matrix.vectors[universe[chunk]], query
            )
        ids = matrix.item_ids[universe[candidates]]
        order = np.lexsort((ids, exact))[:m]
        step_ids, step_d2 = ids[order][walked:], exact[order][walked:]
        families = keys(step_ids) if keys is not None else {}
        for item_id, d2 in zip(step_ids.tolist(), step_d2.tolist(), strict=True):
            walked += 1
            if keys is not None:
                # An item deleted since the snapshot began is not in it: keys are read in it.
                distinct_key, same_key = families.get(item_id, (None, None))
                if not picker.offer(distinct_key, same_key):
                    continue
            found.append((item_id, float(np.sqrt(d2))))
            if len(found) == k:
                return found
        if m == total:
            return found
        m *= 4
