"""Per row, the smallest float32 distance estimates seen so far, fed one tile at a time.

The symmetric full computation (workers.search.kernels.all_nearest_rows) streams every pair's
estimate past both of its rows exactly once. A row cannot keep them all, so it keeps a pool of
``cap`` slots and a *ceiling*: every estimate the row was offered and does not hold is ``>=``
its ceiling. An estimate below the ceiling goes to a free slot; a row whose slots run out is
compacted to its ``keep`` smallest, and its ceiling drops to the smallest one it let go. Once a
row has been offered every pair, its ``k``-th smallest estimate is right if it lies below the
ceiling, and so is every candidate within a margin that stays below it.

Tiles are screened against the ceilings with one comparison and only the estimates that pass
are gathered: after the first blocks a row's ceiling sits near its ``keep``-th neighbour, so a
tile of ``b`` partners brings about ``keep * b / seen`` of them. A slot holds one 64-bit key,
the estimate's bits made order-preserving above the partner's row, so one partition of keys
selects both (ties by row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A tile more than this fraction of whose estimates pass the ceilings is merged whole:
# gathering that many single hits costs more than partitioning the tile.
_DENSE_SHARE = 0.25
_SIGN = np.uint32(0x80000000)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # above every key: an unused slot


def keys_of(values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """64-bit keys ordered as (value, col): float32 bits made order-preserving, then the col."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Negative floats: every bit flipped; others: the sign bit set.
    flip = (bits.view(np.int32) >> 31).view(np.uint32) | _SIGN
    ordered = (bits ^ flip).astype(np.uint64) << np.uint64(32)
    ordered |= cols.astype(np.uint32)
    return ordered


def values_of(keys: np.ndarray) -> np.ndarray:
    """The float32 estimates of keys (an unused slot reads as NaN, so compare it as one)."""
    ordered = (keys >> np.uint64(32)).astype(np.uint32)
    flip = (ordered >> np.uint32(31)) - np.uint32(1) | _SIGN
    return (ordered ^ flip).view(np.float32)


def cols_of(keys: np.ndarray) -> np.ndarray:
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def hits_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a sparse C-contiguous 2-D mask, eight bytes at a time.

    NumPy's nonzero tests every byte; here only the 8-byte words holding a hit are opened."""
    flat = mask.reshape(-1)
    whole = flat.size - flat.size % 8
    octets = flat[:whole].reshape(-1, 8)
    words = np.flatnonzero(octets.view(np.uint64)[:, 0])
    word, byte = np.nonzero(octets[words])
    at = np.concatenate([words[word] * 8 + byte, whole + np.flatnonzero(flat[whole:])])
    rows = at // mask.shape[1]
    return rows, at - rows * mask.shape[1]


@dataclass(frozen=True)
class Screened:
    """A tile side's estimates below the ceilings: ``dense`` (merge it whole), or the hits'
    (first, second) indices into the side, or no hit at all (both None, not dense)."""

    dense: bool
    first: np.ndarray | None
    second: np.ndarray | None


class CandidatePool:
    """The pools of ``n`` rows: ``cap`` slots each, compacted to ``keep`` when full."""

    def __init__(self, n: int, keep: int, cap: int) -> None:
        if cap <= keep:
            raise ValueError("a pool needs at least one slot beyond the ones it keeps")
        self.keep = keep
        self.cap = cap
        self.keys = np.full((n, cap), _EMPTY, dtype=np.uint64)
        self.count = np.zeros(n, dtype=np.int64)
        self.ceiling = np.full(n, np.inf, dtype=np.float32)

    def screen(self, estimates: np.ndarray, lo: int, *, by_row: bool) -> Screened:
        """Which of a tile's estimates pass the rows' ceilings as they are now (see ``offer``).

        Safe on another thread while ``offer`` runs: ceilings only ever drop, so one read a
        moment early is still above every estimate the row lacks; ``offer`` checks the hits
        against the ceilings of its own time again."""
        targets = estimates.shape[0] if by_row else estimates.shape[1]
        ceiling = self.ceiling[lo : lo + targets].copy()
        mask = estimates < (ceiling[:, None] if by_row else ceiling[None, :])
        hits = int(np.count_nonzero(mask))
        if hits == 0 or hits > _DENSE_SHARE * estimates.size:
            return Screened(hits > 0, None, None)
        first, second = hits_of(mask)
        return Screened(False, first, second)

    def offer(
        self,
        estimates: np.ndarray,
        lo: int,
        partners: np.ndarray,
        *,
        by_row: bool,
        screened: Screened | None = None,
    ) -> None:
        """Offer one tile: rows ``lo...`` of the pools get their estimates to ``partners``.

        ``by_row``: ``estimates`` is (targets, partners); otherwise it is (partners, targets)
        (the transposed side of a symmetric tile). C-contiguous either way. ``screened``: the
        tile's ``screen``, made ahead (on the products' thread)."""
        targets = estimates.shape[0] if by_row else estimates.shape[1]
        screened = screened or self.screen(estimates, lo, by_row=by_row)
        if screened.dense:
            at = partners[None, :] if by_row else partners[:, None]
            keys = keys_of(estimates, np.broadcast_to(at, estimates.shape))
            self._compact(np.arange(lo, lo + targets), keys if by_row else keys.T)
            return
        if screened.first is None or screened.second is None:
            return
        first, second = screened.first, screened.second
        # Against the ceilings of now: they may have dropped since the screen.
        local = first if by_row else second
        passing = estimates[first, second] < self.ceiling[lo + local]
        first, second = first[passing], second[passing]
        if first.size == 0:
            return
        if by_row:
            target, partner = first, second
        else:
            # Radix sort: a tile's targets are few enough for 16-bit keys.
            order = np.argsort(second.astype(np.uint16), kind="stable")
            first, second = first[order], second[order]
            target, partner = second, first
        self._append(lo, targets, target, keys_of(estimates[first, second], partners[partner]))

    def _append(self, lo: int, targets: int, target: np.ndarray, keys: np.ndarray) -> None:
        """Keys of hits sorted by target (local index): into free slots, or compact the rows
        that have too few."""
        per = np.bincount(target, minlength=targets)
        starts = np.cumsum(per) - per
        rows = lo + target
        slot = self.count[rows] + (np.arange(target.size) - starts[target])
        full = (self.count[lo : lo + targets] + per) > self.cap
        fits = ~full[target]
        self.keys.reshape(-1)[rows[fits] * self.cap + slot[fits]] = keys[fits]
        self.count[lo : lo + targets] += np.where(full, 0, per)
        if not full.any():
            return
        over = ~fits
        rank = slot[over] - self.count[rows[over]]
        # Rows padded to the most hits among rows of about as many (a power of two), so one
        # row with a whole tile's hits does not widen the others.
        size = np.ceil(np.log2(per + 1)).astype(np.int64)
        for bits in np.unique(size[full]).tolist():
            local = np.flatnonzero(full & (size == bits))
            mine = np.isin(target[over], local)
            extra = np.full((local.size, 1 << bits), _EMPTY, dtype=np.uint64)
            extra[np.searchsorted(local, target[over][mine]), rank[mine]] = keys[over][mine]
            self._compact(lo + local, extra)

    def _compact(self, rows: np.ndarray, extra: np.ndarray) -> None:
        """Rows ``rows`` keep their ``keep`` smallest of what they hold plus ``extra``."""
        keys = np.partition(np.concatenate([self.keys[rows], extra], axis=1), self.keep, axis=1)
        self.keys[rows, : self.keep] = keys[:, : self.keep]
        self.keys[rows, self.keep :] = _EMPTY
        self.count[rows] = self.keep
        # The smallest key let go bounds every estimate not held (an unused one reads NaN).
        dropped = values_of(keys[:, self.keep])
        lower = np.where(np.isnan(dropped), np.inf, dropped).astype(np.float32)
        self.ceiling[rows] = np.minimum(self.ceiling[rows], lower)

    def held(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``lo..hi``: the estimates held (inf in unused slots) and their partner rows."""
        keys = self.keys[lo:hi]
        values = values_of(keys)
        return np.where(keys == _EMPTY, np.float32(np.inf), values), cols_of(keys)

    def release(self, lo: int, hi: int) -> None:
        """Rows ``lo..hi`` are finished: their slots are no longer needed."""
        self.keys[lo:hi] = _EMPTY
        self.count[lo:hi] = 0
