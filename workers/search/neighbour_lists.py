"""The neighbour lists of one matrix's rows, and the rules that keep them exact through a fold.

Row ``r`` of :class:`NeighbourLists` is the list of the matrix's row ``r``: up to LIST_WIDTH
item ids in ascending (float64 squared distance, item id) order, then -1 and inf past its
length. A list is either *complete* (it holds every other item, so a shorter list is the whole
answer) or an exact prefix of that order over every other item. Each operation below keeps that
true: stripping items out of a list leaves a prefix of the order over the rest; an insertion
admits an item into a truncated list only before its last entry (past it, unseen items may come
first); a refill computes a list from scratch.

The arrays grow, shrink and move rows with the matrix (workers.search.index.KindMatrix); the
vectors they are computed from are the matrix's, passed in as ``points``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.search.knn import exact_squared_distances
from shared.search.lists import K_MAX, LIST_WIDTH, NeighbourList
from workers.search.kernels import (
    RankedRows,
    all_nearest_rows,
    margins,
    nearest_rows,
    rerank,
    select_candidates,
)

if TYPE_CHECKING:
    from workers.search.index import KindMatrix

# Rows per slice when scanning every list for changed items: bounds the scan's scratch memory
# (about 1 KB per row of the slice) whatever the catalogue's size.
_STRIP_ROWS = 16_384

# Changed items per slice of the screen against the lists' thresholds: its float64 scratch is
# this many x N x 8 bytes.
_SCREEN_ROWS = 64


@dataclass
class Estimates:
    """float32 distance estimates of one block of changed items (rows) against every row."""

    new_rows: np.ndarray  # (b,) rows of the changed items that have a vector
    approx: np.ndarray  # (b, n): one changed item's estimates per row
    q_sq: np.ndarray  # (b,) float64
    margin: np.ndarray  # (b,) proven error bound of one comparison, per changed item

    @classmethod
    def of_block(cls, points: KindMatrix, new_rows: np.ndarray) -> Estimates:
        """One matrix product of a block of changed vectors against the matrix: O(N x b x d)."""
        x = points.live_vectors
        queries = x[new_rows]
        q_sq = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)
        approx = queries @ x.T
        approx *= -2.0
        approx += points.live_norms[None, :]
        approx += q_sq.astype(np.float32)[:, None]
        margin = margins(float(points.live_norms.max()), q_sq, x.shape[1])
        return cls(new_rows, approx, q_sq, margin)

    def screen(self, threshold: np.ndarray, skip: np.ndarray) -> np.ndarray:
        """(b, n): the pairs whose estimate could beat the list's threshold (within the margin)."""
        margin = self.margin.astype(np.float32)
        screen = np.empty(self.approx.shape, dtype=bool)
        for start in range(0, len(self.approx), _SCREEN_ROWS):
            part = slice(start, start + _SCREEN_ROWS)
            np.less_equal(
                self.approx[part], threshold[None, :] + margin[part, None], out=screen[part]
            )
        screen[:, skip] = False
        return screen


class NeighbourLists:
    """Every row's list: item ids, squared distances, lengths and completeness, by row."""

    def __init__(self) -> None:
        self.ids = np.empty((0, LIST_WIDTH), np.int64)
        self.d2 = np.empty((0, LIST_WIDTH), np.float64)
        self.length = np.empty(0, np.int64)
        self.complete = np.empty(0, bool)
        # The newest fold through which these lists are PostgreSQL's; None: not loaded.
        self.fold: int | None = None
        # Rows the matrix has room for. The arrays take it only once lists are held: a
        # process that only searches (the query worker) never folds, and the arrays are about
        # 2 KB a row.
        self._capacity = 0
        self.held = False

    # ------------------------------------------------------------ rows follow the matrix

    def reserve(self, capacity: int, n: int) -> None:
        """Room for ``capacity`` rows, keeping the first ``n``; the new rows hold empty lists."""
        self._capacity = capacity
        if not self.held:
            return
        ids = np.full((capacity, LIST_WIDTH), -1, np.int64)
        d2 = np.full((capacity, LIST_WIDTH), np.inf, np.float64)
        length = np.zeros(capacity, np.int64)
        complete = np.zeros(capacity, bool)
        ids[:n], d2[:n] = self.ids[:n], self.d2[:n]
        length[:n], complete[:n] = self.length[:n], self.complete[:n]
        self.ids, self.d2, self.length, self.complete = ids, d2, length, complete

    def hold(self) -> None:
        """Allocate the arrays (empty lists) for every reserved row, once: before a load."""
        if not self.held:
            self.held = True
            self.reserve(self._capacity, 0)

    def clear(self, rows: int | slice) -> None:
        """Empty lists at ``rows`` (a new or re-photographed item's list is not known yet)."""
        if not self.held:
            return
        self.ids[rows] = -1
        self.d2[rows] = np.inf
        self.length[rows] = 0
        self.complete[rows] = False

    def move(self, source: int, target: int) -> None:
        """Row ``source``'s list becomes row ``target``'s (the matrix filled a hole)."""
        if not self.held:
            return
        for array in (self.ids, self.d2, self.length, self.complete):
            array[target] = array[source]

    # ------------------------------------------------------------ one list

    def get(self, row: int) -> NeighbourList:
        """A copy of row ``row``'s list."""
        count = int(self.length[row])
        return NeighbourList(
            self.ids[row, :count].copy(), self.d2[row, :count].copy(), bool(self.complete[row])
        )

    def put(self, row: int, value: NeighbourList) -> None:
        """A list as stored (PostgreSQL's); entries past LIST_WIDTH are dropped."""
        count = min(len(value), LIST_WIDTH)
        self.clear(row)
        self.ids[row, :count] = value.ids[:count]
        self.d2[row, :count] = value.sq_distances[:count]
        self.length[row] = count
        self.complete[row] = value.complete

    def _set(self, row: int, ids: np.ndarray, d2: np.ndarray, complete: bool) -> None:
        """Row ``row`` holds these entries in list order, truncated to LIST_WIDTH."""
        order = np.lexsort((ids, d2))
        if order.size > LIST_WIDTH:
            order = order[:LIST_WIDTH]
            complete = False
        count = order.size
        self.clear(row)
        self.ids[row, :count] = ids[order]
        self.d2[row, :count] = d2[order]
        self.length[row] = count
        self.complete[row] = complete

    # ------------------------------------------------------------ the fold's steps

    def strip(self, changed: np.ndarray, n: int) -> set[int]:
        """Remove every changed item from the first ``n`` lists; returns the rows that lost one."""
        if n == 0 or changed.size == 0:
            return set()
        lists = self.ids[:n]
        top = int(max(int(changed.max()), int(lists.max(initial=-1)))) + 2
        flag = np.zeros(top, dtype=bool)
        flag[changed + 1] = True
        stripped: set[int] = set()
        for start in range(0, n, _STRIP_ROWS):
            stop = min(n, start + _STRIP_ROWS)
            hit = flag[lists[start:stop] + 1]  # -1 (empty slots) maps to flag[0], always False
            for offset in np.flatnonzero(hit.any(axis=1)).tolist():
                row = start + offset
                count = int(self.length[row])
                keep = ~hit[offset, :count]
                kept_ids = self.ids[row, :count][keep]
                kept_d2 = self.d2[row, :count][keep]
                self._set(row, kept_ids, kept_d2, bool(self.complete[row]))
                stripped.add(row)
        return stripped

    def short_rows(self, n: int) -> np.ndarray:
        """Rows whose truncated list cannot answer k = K_MAX any more (it lost more than its
        slack, or was never computed): they must be refilled."""
        want = min(K_MAX, max(n - 1, 0))
        return np.flatnonzero((self.length[:n] < want) & ~self.complete[:n])

    def insert(self, points: KindMatrix, est: Estimates, skip: np.ndarray) -> set[int]:
        """Put a block's changed items into every other list they belong to; returns those rows.

        ``skip``: rows refilled anyway (with no lists yet that is every row: nothing is done).
        """
        n = points.n
        if est.new_rows.size == 0 or skip.size >= n:
            return set()
        lens, complete = self.length[:n], self.complete[:n]
        last = np.where(lens > 0, self.d2[np.arange(n), np.maximum(lens - 1, 0)], -np.inf)
        # Row-major: grouped by changed item, rows ascending within each.
        cols, rows = np.nonzero(est.screen(np.where(complete, np.inf, last), skip))
        mine = rows != est.new_rows[cols]  # an item is not its own neighbour
        rows, cols = rows[mine], cols[mine]
        if rows.size == 0:
            return set()
        d2 = _exact_pairs(points, est.new_rows, rows, cols)
        cids = points.live_ids[est.new_rows][cols]
        # Past a truncated list's last entry, unseen items may come first: the prefix stays as is.
        tail = np.maximum(lens[rows] - 1, 0)
        tail_d2, tail_id = self.d2[rows, tail], self.ids[rows, tail]
        admit = complete[rows] | (d2 < tail_d2) | ((d2 == tail_d2) & (cids < tail_id))
        rows, cids, d2 = rows[admit], cids[admit], d2[admit]
        if rows.size == 0:
            return set()
        touched, per_row = np.unique(rows, return_counts=True)
        single = np.isin(rows, touched[per_row == 1])
        self._insert_one_each(rows[single], cids[single], d2[single])
        for row in touched[per_row > 1].tolist():
            mine = rows == row
            count = int(lens[row])
            self._set(
                row,
                np.concatenate([self.ids[row, :count], cids[mine]]),
                np.concatenate([self.d2[row, :count], d2[mine]]),
                bool(complete[row]),
            )
        return set(touched.tolist())

    def _insert_one_each(self, rows: np.ndarray, cids: np.ndarray, d2: np.ndarray) -> None:
        """One new entry into each of many lists at once (the common case of a fold)."""
        if rows.size == 0:
            return
        old_d2, old_ids = self.d2[rows], self.ids[rows]
        before = (old_d2 < d2[:, None]) | ((old_d2 == d2[:, None]) & (old_ids < cids[:, None]))
        pos = before.sum(axis=1)[:, None]
        slot = np.arange(LIST_WIDTH)[None, :]
        shifted_d2 = np.concatenate([np.full((rows.size, 1), np.inf), old_d2[:, :-1]], axis=1)
        shifted_ids = np.concatenate([np.full((rows.size, 1), -1), old_ids[:, :-1]], axis=1)
        self.d2[rows] = np.where(slot < pos, old_d2, np.where(slot == pos, d2[:, None], shifted_d2))
        self.ids[rows] = np.where(
            slot < pos, old_ids, np.where(slot == pos, cids[:, None], shifted_ids)
        )
        grown = self.length[rows] + 1
        self.complete[rows] &= grown <= LIST_WIDTH  # one pushed off the end: truncated now
        self.length[rows] = np.minimum(grown, LIST_WIDTH)

    def refill_estimated(self, points: KindMatrix, est: Estimates) -> None:
        """Fresh lists for a block of changed items, from the product the block already made.

        Consumes ``est.approx`` (its own entries become inf)."""
        if est.new_rows.size == 0 or points.n < 2:
            return
        rows = est.new_rows
        est.approx[np.arange(rows.size), rows] = np.inf  # not its own neighbour
        found = select_candidates(est.approx, min(LIST_WIDTH, points.n - 1), est.margin)
        ranked = rerank(
            points.live_vectors,
            points.live_norms64,
            points.live_ids,
            points.live_vectors[rows],
            found,
            LIST_WIDTH,
        )
        self.store_ranked(points, rows, ranked)

    def refill(self, points: KindMatrix, rows: np.ndarray, block_rows: int, device: str) -> None:
        """Fresh lists for ``rows`` by the blocked kernel (``block_rows`` x N scratch at a time)."""
        if rows.size == 0:
            return
        if rows.size == points.n and device == "numpy":
            # Every list (the first computation): the symmetric pass makes half the products.
            ranked = all_nearest_rows(
                points.live_vectors,
                points.live_norms,
                points.live_ids,
                LIST_WIDTH,
                sq_norms64=points.live_norms64,
                block_rows=block_rows,
            )
        else:
            ranked = nearest_rows(
                points.live_vectors,
                points.live_norms,
                points.live_ids,
                points.live_vectors[rows],
                LIST_WIDTH,
                self_rows=rows,
                sq_norms64=points.live_norms64,
                block_rows=block_rows,
                device=device,
            )
        self.store_ranked(points, rows, ranked)

    def store_ranked(self, points: KindMatrix, rows: np.ndarray, ranked: RankedRows) -> None:
        """The kernel's answer for ``rows`` (matrix rows, mapped to item ids): their lists."""
        others = points.n - 1
        for offset, row in enumerate(rows.tolist()):
            count = int(ranked.counts[offset])
            self.clear(row)
            self.ids[row, :count] = points.live_ids[ranked.rows[offset, :count]]
            self.d2[row, :count] = ranked.sq_distances[offset, :count]
            self.length[row] = count
            self.complete[row] = count == others

    def complete_whole(self, n: int) -> set[int]:
        """Mark complete every truncated list that now holds every other item (the catalogue
        shrank); returns those rows."""
        whole = np.flatnonzero((self.length[:n] == n - 1) & ~self.complete[:n])
        self.complete[whole] = True
        return set(whole.tolist())


def _exact_pairs(
    points: KindMatrix, new_rows: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """float64 squared distances of the screened pairs (``cols`` grouped by changed item)."""
    x = points.live_vectors
    bounds = np.searchsorted(cols, np.arange(new_rows.size + 1))
    d2 = np.empty(rows.size, dtype=np.float64)
    for c in range(new_rows.size):
        part = slice(int(bounds[c]), int(bounds[c + 1]))
        if part.start < part.stop:
            d2[part] = exact_squared_distances(
                x[rows[part]], x[new_rows[c]], points.live_norms64[rows[part]]
            )
    return d2
