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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm
from typing_extensions import override

from shared.search.dots import pair_dots
from shared.search.knn import _EPS32, squared_distances_from_dots, squared_norms64
from workers.search.candidates import CandidatePool
from workers.search.tiles import Tile, spans, tiles

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RankedRows:
    """Per query: the nearest rows of the matrix (``-1`` padded), exact squared distances."""

    rows: np.ndarray  # (m, w) int64, -1 past ``counts``
    sq_distances: np.ndarray  # (m, w) float64, inf past ``counts``
    counts: np.ndarray  # (m,) int64

    @classmethod
    def empty(cls, m: int, width: int) -> RankedRows:
        """``m`` queries with no row found yet."""
        return cls(
            np.full((m, width), -1, dtype=np.int64),
            np.full((m, width), np.inf, dtype=np.float64),
            np.zeros(m, dtype=np.int64),
        )


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


# Pairs re-ranked per call of the dot products (each of the call's arrays is 8 bytes a pair).
_RERANK_PAIRS = 1 << 20


def rerank(
    vectors: np.ndarray,
    sq_norms64: np.ndarray,
    item_ids: np.ndarray,
    queries: np.ndarray,
    candidates: list[np.ndarray],
    width: int,
    query_norms64: np.ndarray | None = None,
) -> RankedRows:
    """Exact float64 distances of each query's candidates, the ``width`` best by (d, id).

    The pairs of many queries go to the dot products at once (shared.search.dots: compiled,
    the lane order) and through the one distance formula (shared.search.knn), so each distance
    is the very value ``exact_squared_distances`` gives for that pair. Queries are taken in
    groups of at most ``_RERANK_PAIRS`` pairs; a query with more candidates than that (heavy
    ties) goes alone, a chunk at a time. ``query_norms64``: the queries' squared norms, if the
    caller has them."""
    m = len(candidates)
    out = RankedRows.empty(m, width)
    if m == 0:
        return out
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    q_norms = squared_norms64(queries) if query_norms64 is None else query_norms64
    pairs = _Pairs(vectors, sq_norms64, item_ids, queries, q_norms)
    sizes = np.array([c.size for c in candidates], dtype=np.int64)
    start = 0
    while start < m:
        if sizes[start] > _RERANK_PAIRS:
            pairs.wide_row(candidates[start], start, width, out)
            start += 1
            continue
        stop, total, widest = start, 0, 0
        while stop < m and sizes[stop] <= _RERANK_PAIRS:
            grown = max(widest, int(sizes[stop]))
            if (
                total + sizes[stop] > _RERANK_PAIRS
                or (stop - start + 1) * grown > 4 * _RERANK_PAIRS
            ):
                break
            total, widest, stop = total + int(sizes[stop]), grown, stop + 1
        pairs.rows(candidates, sizes, start, stop, width, out)
        start = stop
    return out


class _Pairs:
    """Exact distances of (matrix row, query) pairs, and each query's best by (d, item id)."""

    def __init__(
        self,
        vectors: np.ndarray,
        sq_norms64: np.ndarray,
        item_ids: np.ndarray,
        queries: np.ndarray,
        q_norms: np.ndarray,
    ) -> None:
        self.vectors = vectors
        self.norms = sq_norms64
        self.ids = item_ids
        self.queries = queries
        self.q_norms = q_norms

    def exact(self, cand: np.ndarray, owner: np.ndarray) -> np.ndarray:
        scale = self.norms[cand] + self.q_norms[owner]
        dots = pair_dots(self.vectors, cand, self.queries, owner)
        return squared_distances_from_dots(self.vectors, cand, self.queries, owner, scale, dots)

    def rows(
        self,
        candidates: list[np.ndarray],
        all_sizes: np.ndarray,
        start: int,
        stop: int,
        width: int,
        out: RankedRows,
    ) -> None:
        """Queries ``start..stop`` (``all_sizes``: every query's candidate count), all their
        pairs in one call, sorted side by side."""
        sizes = all_sizes[start:stop]
        m, widest = stop - start, int(sizes.max(initial=0))
        if widest == 0:
            return
        cand = np.concatenate(candidates[start:stop]).astype(np.int64, copy=False)
        local = np.repeat(np.arange(m, dtype=np.int64), sizes)
        exact = self.exact(cand, local + start)
        slot = np.arange(cand.size, dtype=np.int64) - (np.cumsum(sizes) - sizes)[local]
        d2 = np.full((m, widest), np.inf, dtype=np.float64)
        ids = np.full((m, widest), np.iinfo(np.int64).max, dtype=np.int64)
        at = np.full((m, widest), -1, dtype=np.int64)
        d2[local, slot], ids[local, slot], at[local, slot] = exact, self.ids[cand], cand
        kept = min(width, widest)
        order = np.lexsort((ids, d2), axis=1)[:, :kept]
        counts = np.minimum(sizes, width)
        filled = np.arange(kept)[None, :] < counts[:, None]
        out.rows[start:stop, :kept] = np.where(filled, np.take_along_axis(at, order, axis=1), -1)
        out.sq_distances[start:stop, :kept] = np.where(
            filled, np.take_along_axis(d2, order, axis=1), np.inf
        )
        out.counts[start:stop] = counts

    def wide_row(self, cand: np.ndarray, i: int, width: int, out: RankedRows) -> None:
        """One query with more candidates than a call takes: chunk after chunk, the best kept."""
        best = np.empty(0, dtype=np.int64)
        best_d2 = np.empty(0, dtype=np.float64)
        for begin in range(0, cand.size, _RERANK_PAIRS):
            part = cand[begin : begin + _RERANK_PAIRS].astype(np.int64, copy=False)
            exact = self.exact(part, np.full(part.size, i, dtype=np.int64))
            rows = np.concatenate([best, part])
            d2 = np.concatenate([best_d2, exact])
            order = np.lexsort((self.ids[rows], d2))[:width]
            best, best_d2 = rows[order], d2[order]
        out.rows[i, : best.size] = best
        out.sq_distances[i, : best.size] = best_d2
        out.counts[i] = best.size


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
    out = RankedRows.empty(m, width)
    n = vectors.shape[0]
    if m == 0 or n == 0 or width <= 0:
        return out
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
        out.rows[block] = ranked.rows
        out.sq_distances[block] = ranked.sq_distances
        out.counts[block] = ranked.counts
    return out


# Candidates kept per row beyond the ``width`` that rank while the symmetric pass streams: a
# row with more estimates than that within its margin (heavy ties) is recomputed on its own.
_SPARE = 64
# Free slots per row beyond the kept ones: a row is compacted once they run out.
_SLOTS = 128


def _offer(pool: CandidatePool, tile: Tile) -> None:
    """One tile's estimates to both sides: the block's rows, and (transposed) the later rows
    (the pairs inside the block go to its rows only)."""
    pool.offer(
        tile.rows_side,
        tile.start,
        np.arange(tile.lo, tile.hi, dtype=np.int32),
        by_row=True,
        screened=tile.rows_screened,
    )
    if tile.cols_side is not None:
        mine = np.arange(tile.start, tile.stop, dtype=np.int32)
        pool.offer(tile.cols_side, tile.later, mine, by_row=False, screened=tile.cols_screened)


def _screen(pool: CandidatePool) -> Callable[[Tile], Tile]:
    """The pools' screen of both sides of a tile, run where the tile is made."""

    def screen(tile: Tile) -> Tile:
        rows = pool.screen(tile.rows_side, tile.start, by_row=True)
        cols = None
        if tile.cols_side is not None:
            cols = pool.screen(tile.cols_side, tile.later, by_row=False)
        return replace(tile, rows_screened=rows, cols_screened=cols)

    return screen


# The first block is this many blocks tall: its rows are offered to every later row at once, so
# each pool starts from that many estimates and a ceiling that screens out most of the rest.
_FIRST_BLOCKS = 1


def _row_blocks(n: int, block: int) -> Iterator[tuple[int, int]]:
    first = min(n, _FIRST_BLOCKS * block)
    yield 0, first
    for start in range(first, n, block):
        yield start, min(n, start + block)


def _finished_candidates(
    pool: CandidatePool, start: int, stop: int, kk: int, bounds: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows ``start..stop`` have been offered every pair: per row, the columns within its
    margin of its ``kk``-th estimate, and which rows cannot tell (they are recomputed)."""
    values, cols = pool.held(start, stop)
    kth = np.partition(values, kk - 1, axis=1)[:, kk - 1]
    limit = kth + bounds[start:stop]
    sure = limit < pool.ceiling[start:stop]
    within = values <= limit[:, None]
    candidates = [
        cols[i][within[i]] if sure[i] else np.empty(0, np.int64) for i in range(stop - start)
    ]
    return candidates, start + np.flatnonzero(~sure)


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
    the rows after it, tile by tile, and each tile's estimates serve both sides, ``I``'s rows
    and (transposed) the later rows' (workers.search.candidates: each row pools the smallest
    estimates it has been offered, screened against a ceiling). Estimates leave out the target
    row's own norm (a shift per row: the order and the margins do not change), so one addition
    per side makes them. Once ``I``'s rows have been offered every pair, their candidates are
    those within the proven margin of their ``width``-th smallest, re-ranked exactly by
    :func:`rerank`; a row whose margin reaches its ceiling (heavy ties) is recomputed by
    :func:`nearest_rows`, so every list equals brute force. Extra memory: the pools
    (``(width + _SPARE + _SLOTS) x 8`` bytes a row) and two tiles of estimates
    (``block_rows x TILE_COLS x 4`` bytes each, a few made ahead: workers.search.tiles).
    """
    n, dim = vectors.shape
    out = RankedRows.empty(n, width)
    kk = min(width, n - 1)
    if n < 2 or kk <= 0:
        return out
    keep = min(n - 1, kk + _SPARE)
    pool = CandidatePool(n, keep, keep + _SLOTS)
    norms64 = squared_norms64(vectors) if sq_norms64 is None else sq_norms64
    bounds = margins(float(sq_norms.max()), norms64, dim).astype(np.float32)
    unsure: list[np.ndarray] = []
    blocks = list(_row_blocks(n, max(1, block_rows)))
    # Minutes at 100k items on a CPU: a bar (on a terminal) counts the tiles, a fair measure of
    # the work (the first blocks have the most).
    progress = tqdm(
        total=len(spans(n, blocks)), desc=f"all lists of {n}", unit="tile", disable=None
    )
    for tile in tiles(vectors, sq_norms, blocks, _screen(pool)):
        _offer(pool, tile)
        progress.update()
        if tile.hi >= n:  # the block's last tile: its rows have been offered every pair
            unsure.append(_finish_block(pool, tile, kk, bounds, item_ids, norms64, vectors, out))
    progress.close()
    _recompute_rows(vectors, sq_norms, norms64, item_ids, np.concatenate(unsure), out, block_rows)
    return out


def _finish_block(
    pool: CandidatePool,
    tile: Tile,
    kk: int,
    bounds: np.ndarray,
    item_ids: np.ndarray,
    norms64: np.ndarray,
    vectors: np.ndarray,
    out: RankedRows,
) -> np.ndarray:
    """A block whose rows have been offered every pair: their lists, exactly, into ``out``;
    returns the rows that could not tell (recomputed alone afterwards)."""
    start, stop = tile.start, tile.stop
    candidates, lost = _finished_candidates(pool, start, stop, kk, bounds)
    pool.release(start, stop)
    width = out.rows.shape[1]
    queries = vectors[start:stop]
    ranked = rerank(vectors, norms64, item_ids, queries, candidates, width, norms64[start:stop])
    out.rows[start:stop] = ranked.rows
    out.sq_distances[start:stop] = ranked.sq_distances
    out.counts[start:stop] = ranked.counts
    return lost


def _recompute_rows(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    norms64: np.ndarray,
    item_ids: np.ndarray,
    rows: np.ndarray,
    out: RankedRows,
    block_rows: int,
) -> None:
    """Rows whose pooled candidates could not prove their list (heavy ties), recomputed alone
    against every row, into ``out``."""
    if not rows.size:
        return
    width = out.rows.shape[1]
    redo = nearest_rows(
        vectors,
        sq_norms,
        item_ids,
        vectors[rows],
        width,
        self_rows=rows,
        sq_norms64=norms64,
        block_rows=block_rows,
    )
    out.rows[rows] = redo.rows
    out.sq_distances[rows] = redo.sq_distances
    out.counts[rows] = redo.counts
