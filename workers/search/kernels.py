"""Exact nearest rows for many queries at once: blocked matrix products, then a float64 re-rank.

For a block of query rows the float32 estimates ``||x||^2 - 2 x.q + ||q||^2`` of every
distance come from one matrix product (BLAS on CPU, torch on CUDA). Float32 rounding can reorder
near-equal distances, so the estimates only *select*: every row whose estimate lies within a
proven error margin of the block row's w-th estimate (shared.search.knn's bound). The selected
pairs get their exact float64 distances from the vectors themselves, with the same function the
web tier uses for the changes it adds, and are ordered by (distance, item id). The result
therefore equals a float64 brute force over the same vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from typing_extensions import override

from shared.search.knn import _EPS32, exact_squared_distances, squared_norms64

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RankedRows:
    """Per query: the nearest rows of the matrix (``-1`` padded), exact squared distances."""

    rows: np.ndarray  # (m, w) int64, -1 past ``counts``
    sq_distances: np.ndarray  # (m, w) float64, inf past ``counts``
    counts: np.ndarray  # (m,) int64


def margins(max_sq_norm: float, q_sq: np.ndarray, dim: int) -> np.ndarray:
    # Two float32 estimates are compared, each off by at most 2*dim*eps*(||x||^2 + ||q||^2).
    return 4.0 * dim * _EPS32 * (max_sq_norm + q_sq) + 1e-30


def _blocks(m: int, rows: int) -> Iterator[slice]:
    for start in range(0, m, max(1, rows)):
        yield slice(start, min(m, start + max(1, rows)))


def _reach(n: int, self_rows: np.ndarray, width: int) -> int:
    """How many estimates per query row can rank (``width``, less the row's own when excluded)."""
    return min(width, n - int((self_rows >= 0).astype(np.int64).max(initial=0)))


class _Estimator:
    """float32 distance estimates of a query block against the whole matrix, by BLAS."""

    def __init__(self, vectors: np.ndarray, sq_norms: np.ndarray) -> None:
        self.x = vectors
        self.norms = sq_norms

    def candidates(
        self,
        queries: np.ndarray,
        q_sq: np.ndarray,
        self_rows: np.ndarray,
        width: int,
        margin: np.ndarray,
    ) -> list[np.ndarray]:
        """Per query, the rows that could rank within ``width`` (self rows excluded)."""
        kk = _reach(self.x.shape[0], self_rows, width)
        if kk <= 0:
            return [np.empty(0, np.int64) for _ in range(queries.shape[0])]
        return self._within_margin(queries, q_sq, self_rows, kk, margin)

    def _within_margin(
        self,
        queries: np.ndarray,
        q_sq: np.ndarray,
        self_rows: np.ndarray,
        kk: int,
        margin: np.ndarray,
    ) -> list[np.ndarray]:
        approx = queries @ self.x.T
        approx *= -2.0
        approx += self.norms[None, :]
        approx += q_sq.astype(np.float32)[:, None]
        own = np.flatnonzero(self_rows >= 0)
        approx[own, self_rows[own]] = np.inf
        return select_candidates(approx, kk, margin)


class _TorchEstimator(_Estimator):
    """The same estimates computed by torch on ``device``, the matrix copied there once."""

    def __init__(self, vectors: np.ndarray, sq_norms: np.ndarray, device: str) -> None:
        import torch

        super().__init__(vectors, sq_norms)
        self.device = device
        self.x_dev: torch.Tensor = torch.from_numpy(np.ascontiguousarray(vectors)).to(device)
        self.norms_dev: torch.Tensor = torch.from_numpy(np.ascontiguousarray(sq_norms)).to(device)

    @override
    def _within_margin(
        self,
        queries: np.ndarray,
        q_sq: np.ndarray,
        self_rows: np.ndarray,
        kk: int,
        margin: np.ndarray,
    ) -> list[np.ndarray]:
        import torch

        q = torch.from_numpy(np.ascontiguousarray(queries)).to(self.device)
        approx = torch.addmm(self.norms_dev.unsqueeze(0), q, self.x_dev.T, alpha=-2.0)
        approx += torch.from_numpy(q_sq.astype(np.float32)).to(self.device).unsqueeze(1)
        own = np.flatnonzero(self_rows >= 0)
        if own.size:
            approx[torch.from_numpy(own), torch.from_numpy(self_rows[own])] = float("inf")
        kth = torch.kthvalue(approx, kk, dim=1).values
        limit = kth + torch.from_numpy(margin.astype(np.float32)).to(self.device)
        mask = (approx <= limit.unsqueeze(1)).cpu().numpy()
        return [np.flatnonzero(row) for row in mask]


def select_candidates(approx: np.ndarray, kk: int, margin: np.ndarray) -> list[np.ndarray]:
    """Per row of float32 estimates (excluded entries set to inf), every column that could
    rank within ``kk``: those within the row's error margin of its kk-th smallest estimate."""
    if kk <= 0:
        return [np.empty(0, np.int64) for _ in range(approx.shape[0])]
    limit = _kth_smallest(approx, kk) + margin.astype(np.float32)
    mask = approx <= limit[:, None]
    return [np.flatnonzero(row) for row in mask]


def rerank(
    vectors: np.ndarray,
    sq_norms64: np.ndarray,
    item_ids: np.ndarray,
    queries: np.ndarray,
    candidates: list[np.ndarray],
    width: int,
) -> RankedRows:
    """Exact float64 distances of each query's candidates, the ``width`` best by (d, id)."""
    m = len(candidates)
    rows_out = np.full((m, width), -1, dtype=np.int64)
    d2_out = np.full((m, width), np.inf, dtype=np.float64)
    counts = np.zeros(m, dtype=np.int64)
    for i, cand in enumerate(candidates):
        if cand.size == 0:
            continue
        exact = exact_squared_distances(vectors[cand], queries[i], sq_norms64[cand])
        order = np.lexsort((item_ids[cand], exact))[:width]
        counts[i] = order.size
        rows_out[i, : order.size] = cand[order]
        d2_out[i, : order.size] = exact[order]
    return RankedRows(rows_out, d2_out, counts)


def _kth_smallest(approx: np.ndarray, kk: int) -> np.ndarray:
    """Per row, the kk-th smallest value (torch's top-k on CPU beats numpy's partition 2x)."""
    try:
        import torch
    except ImportError:
        return np.partition(approx, kk - 1, axis=1)[:, kk - 1]
    values = torch.topk(torch.from_numpy(approx), kk, dim=1, largest=False, sorted=False).values
    return values.max(dim=1).values.numpy()


def nearest_rows(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    item_ids: np.ndarray,
    queries: np.ndarray,
    width: int,
    self_rows: np.ndarray | None = None,
    *,
    sq_norms64: np.ndarray | None = None,
    block_rows: int = 512,
    device: str = "numpy",
) -> RankedRows:
    """The ``width`` nearest rows of ``vectors`` to each query, ties by ``item_ids``.

    ``vectors`` (n, d) float32 with ``sq_norms`` its squared row norms; ``queries`` (m, d);
    ``self_rows[i] >= 0`` excludes that row from query i's answer (an item is not its own
    neighbour); ``sq_norms64``: the rows' float64 squared norms, if the caller keeps them.
    ``device``: "numpy" (BLAS on this CPU) or a torch device ("cuda", "cpu").
    """
    m = queries.shape[0]
    rows_out = np.full((m, width), -1, dtype=np.int64)
    d2_out = np.full((m, width), np.inf, dtype=np.float64)
    counts = np.zeros(m, dtype=np.int64)
    n = vectors.shape[0]
    if m == 0 or n == 0 or width <= 0:
        return RankedRows(rows_out, d2_out, counts)
    own = np.full(m, -1, dtype=np.int64) if self_rows is None else np.asarray(self_rows, np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    q_sq = np.einsum("ij,ij->i", queries.astype(np.float64), queries.astype(np.float64))
    bounds = margins(float(sq_norms.max()), q_sq, vectors.shape[1])
    norms64 = squared_norms64(vectors) if sq_norms64 is None else sq_norms64
    estimator = (
        _Estimator(vectors, sq_norms)
        if device == "numpy"
        else _TorchEstimator(vectors, sq_norms, device)
    )
    for block in _blocks(m, block_rows):
        found = estimator.candidates(queries[block], q_sq[block], own[block], width, bounds[block])
        ranked = rerank(vectors, norms64, item_ids, queries[block], found, width)
        rows_out[block] = ranked.rows
        d2_out[block] = ranked.sq_distances
        counts[block] = ranked.counts
    return RankedRows(rows_out, d2_out, counts)


# Candidates kept per row beyond the ``width`` that rank while the symmetric pass streams: a
# row with more estimates than that within its margin (heavy ties) is recomputed on its own.
_SPARE = 64
# Rows per slice when merging one block's estimates into the other rows' candidates.
_MERGE_ROWS = 8192


def _smallest(values: np.ndarray, cols: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``keep`` smallest values (any order) and their columns."""
    if values.shape[1] <= keep:
        return values, cols
    part = np.argpartition(values, keep - 1, axis=1)[:, :keep]
    return np.take_along_axis(values, part, axis=1), np.take_along_axis(cols, part, axis=1)


def _smallest_of(values: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a wide block, the ``keep`` smallest values and their columns, without an
    index array the block's size (torch's top-k; NumPy's argpartition makes one)."""
    if values.shape[1] <= keep:
        at = np.broadcast_to(np.arange(values.shape[1]), values.shape)
        return values, np.ascontiguousarray(at)
    try:
        import torch
    except ImportError:
        part = np.argpartition(values, keep - 1, axis=1)[:, :keep]
        return np.take_along_axis(values, part, axis=1), part
    top = torch.topk(torch.from_numpy(values), keep, dim=1, largest=False, sorted=False)
    return top.values.numpy(), top.indices.numpy()


def _merge_later(
    kept: np.ndarray,
    kept_cols: np.ndarray,
    lo: int,
    theirs: np.ndarray,
    cols: np.ndarray,
    keep: int,
) -> None:
    """Merge one block's estimates (``theirs``: rows ``lo...`` x the block's columns ``cols``)
    into those rows' kept candidates.

    Only an estimate below a row's largest kept one can enter (a row not yet full keeps inf
    slots, so everything enters): once the rows are full, a few per row do, and only those are
    gathered, padded with inf, for the selection. Dropping the rest keeps the invariant the
    final check relies on: every estimate ever dropped is >= the row's largest kept one.
    """
    stop = lo + theirs.shape[0]
    ceiling = kept[lo:stop].max(axis=1)
    rows, at = np.nonzero(theirs < ceiling[:, None])
    if rows.size == 0:
        return
    starts = np.searchsorted(rows, np.arange(theirs.shape[0] + 1))
    per_row = np.diff(starts)
    width = int(per_row.max())
    hit_rows = np.flatnonzero(per_row)
    slot = np.arange(rows.size) - starts[rows]
    dense = np.searchsorted(hit_rows, rows)
    values = np.full((hit_rows.size, width), np.inf, dtype=np.float32)
    found = np.full((hit_rows.size, width), -1, dtype=kept_cols.dtype)
    values[dense, slot] = theirs[rows, at]
    found[dense, slot] = cols[at]
    targets = lo + hit_rows
    kept[targets], kept_cols[targets] = _smallest(
        np.concatenate([kept[targets], values], axis=1),
        np.concatenate([kept_cols[targets], found], axis=1),
        keep,
    )


def all_nearest_rows(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    item_ids: np.ndarray,
    width: int,
    *,
    sq_norms64: np.ndarray | None = None,
    block_rows: int = 512,
) -> RankedRows:
    """:func:`nearest_rows` of every row against all the others, with half the products.

    The distance matrix is symmetric: block ``I`` of rows is multiplied only with itself and
    the rows after it, and those estimates serve both sides, ``I``'s rows and (transposed) the
    later rows'. Each row keeps its ``width + _SPARE`` smallest estimates seen so far; once all
    blocks have passed, its candidates are those within the proven margin of its ``width``-th
    smallest (as :func:`select_candidates`), re-ranked exactly by :func:`rerank`. A row whose
    kept estimates all lie within the margin may have lost a candidate: it is recomputed by
    :func:`nearest_rows`. Extra memory: the kept candidates (``(width + _SPARE) x 12`` bytes a
    row) and one block's estimates against the rest (``block_rows x N x 4`` bytes, merged in
    slices of ``_MERGE_ROWS``).
    """
    n, dim = vectors.shape
    rows_out = np.full((n, width), -1, dtype=np.int64)
    d2_out = np.full((n, width), np.inf, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    kk = min(width, n - 1)
    if n < 2 or kk <= 0:
        return RankedRows(rows_out, d2_out, counts)
    keep = min(n - 1, kk + _SPARE)
    norms64 = squared_norms64(vectors) if sq_norms64 is None else sq_norms64
    bounds = margins(float(sq_norms.max()), norms64, dim).astype(np.float32)
    kept = np.full((n, keep), np.inf, dtype=np.float32)
    kept_cols = np.full((n, keep), -1, dtype=np.int32)
    block = max(1, block_rows)
    unsure: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        approx = vectors[start:stop] @ vectors[start:].T  # (b, n - start)
        approx *= -2.0
        approx += sq_norms[None, start:]
        approx += sq_norms[start:stop, None]
        own = np.arange(stop - start)
        approx[own, own] = np.inf  # not its own neighbour
        # The later rows' side first, transposed slice by slice (their estimates of this block).
        mine = np.arange(start, stop, dtype=np.int32)
        for lo in range(stop, n, _MERGE_ROWS):
            hi = min(n, lo + _MERGE_ROWS)
            _merge_later(kept, kept_cols, lo, approx[:, lo - start : hi - start].T, mine, keep)
        # This block's rows: everything before it is in ``kept`` already, the rest is here.
        near, at = _smallest_of(approx, keep)
        del approx
        values, found = _smallest(
            np.concatenate([kept[start:stop], near], axis=1),
            np.concatenate([kept_cols[start:stop], (start + at).astype(np.int32)], axis=1),
            keep,
        )
        limit = _kth_smallest(values, kk) + bounds[start:stop]
        within = values <= limit[:, None]
        lost = within.all(axis=1) & (keep < n - 1)
        candidates = [
            found[i][within[i]].astype(np.int64) if not lost[i] else np.empty(0, np.int64)
            for i in range(stop - start)
        ]
        ranked = rerank(vectors, norms64, item_ids, vectors[start:stop], candidates, width)
        rows_out[start:stop] = ranked.rows
        d2_out[start:stop] = ranked.sq_distances
        counts[start:stop] = ranked.counts
        kept[start:stop] = np.inf  # done with: only later rows' candidates are still needed
        unsure.append(start + np.flatnonzero(lost))
    again = np.concatenate(unsure)
    if again.size:
        redo = nearest_rows(
            vectors,
            sq_norms,
            item_ids,
            vectors[again],
            width,
            self_rows=again,
            sq_norms64=norms64,
            block_rows=block_rows,
        )
        rows_out[again] = redo.rows
        d2_out[again] = redo.sq_distances
        counts[again] = redo.counts
    return RankedRows(rows_out, d2_out, counts)
