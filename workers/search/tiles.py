"""The symmetric pass's tiles of float32 estimates, computed ahead on a thread of their own.

A tile is the product of one block of rows with a run of the rows from the block on, plus the
norms that make it the two sides' estimates (workers.search.kernels.all_nearest_rows). The
products are BLAS and release the GIL; what consumes them (the pools' screening and the exact
re-rank) is Python and NumPy on one core. So on a machine of ``c`` cores the tiles are made on
a producer thread whose matrix products use ``c - 1`` threads, a few tiles ahead of the
consumer, and both sides keep every core busy instead of taking turns. Without torch (whose
thread count can be set for the products alone) or on one core, tiles are made in line.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workers.search.candidates import Screened

# Columns per tile: one tile's scratch is ``block x _TILE_COLS`` estimates, twice.
TILE_COLS = 4096
# Tiles made ahead of the consumer: bounds the scratch to this many tiles more.
_AHEAD = 6


Product = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (block, rows) -> block @ rows.T


@dataclass(frozen=True)
class Tile:
    """Rows ``start..stop`` against rows ``lo..hi``: estimates without the target's own norm."""

    start: int
    stop: int
    lo: int
    hi: int
    rows_side: np.ndarray  # (stop - start, hi - lo): for the block's rows, self pairs inf
    cols_side: np.ndarray | None  # (stop - start, hi - later): for rows later..hi
    later: int  # the first row after the block within lo..hi
    # What the consumer's screen made of each side on the thread that made the tile, if any.
    rows_screened: Screened | None = None
    cols_screened: Screened | None = None


# Run on each tile by the thread that made it (the pools' screen: workers.search.kernels).
Screen = Callable[[Tile], Tile]


def spans(n: int, blocks: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Every tile's (start, stop, lo, hi), in the order the consumer takes them."""
    return [
        (start, stop, lo, min(n, lo + TILE_COLS))
        for start, stop in blocks
        for lo in range(start, n, TILE_COLS)
    ]


def _tile(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    span: tuple[int, int, int, int],
    mm: Product,
    screen: Screen | None = None,
) -> Tile:
    start, stop, lo, hi = span
    # -2 x is exact in float32: the product is -2 x.y with no pass of its own.
    block = vectors[start:stop] * np.float32(-2.0)
    product = mm(block, vectors[lo:hi])
    rows_side = product + sq_norms[None, lo:hi]
    own = np.arange(lo, min(hi, stop))  # the block's rows among the tile's columns
    rows_side[own - start, own - lo] = np.inf  # not its own neighbour
    later = max(lo, stop)
    cols_side = None
    if later < hi:
        cols_side = product[:, later - lo :]
        cols_side += sq_norms[start:stop, None]
    tile = Tile(start, stop, lo, hi, rows_side, cols_side, later)
    return screen(tile) if screen is not None else tile


def _products(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    blocks: list[tuple[int, int]],
    mm: Product,
    screen: Screen | None = None,
) -> Iterator[Tile]:
    for span in spans(vectors.shape[0], blocks):
        yield _tile(vectors, sq_norms, span, mm, screen)


def _numpy_mm(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    product: np.ndarray = block @ rows.T
    return product


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tiles(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    blocks: list[tuple[int, int]],
    screen: Screen | None = None,
) -> Iterator[Tile]:
    """Every tile of ``blocks`` in order; made ahead on a thread where that keeps cores busy.
    ``screen`` runs on each tile where it was made (its big passes release the GIL)."""
    cores = _cores()
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is None or cores < 2:
        yield from _products(vectors, sq_norms, blocks, _numpy_mm, screen)
        return
    yield from _ahead(vectors, sq_norms, blocks, cores - 1, screen)


def _torch_mm(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    import torch

    return torch.mm(torch.from_numpy(block), torch.from_numpy(rows).T).numpy()


class _Tiles:
    """Tiles claimed in order by two threads: the producer, and the consumer when the tile it
    needs next is not made yet (it makes the next unclaimed one instead of waiting), so the
    products get every core the screening leaves idle. At most ``_AHEAD`` tiles wait."""

    def __init__(
        self,
        vectors: np.ndarray,
        sq_norms: np.ndarray,
        blocks: list[tuple[int, int]],
        screen: Screen | None,
    ) -> None:
        self.screen = screen
        self.vectors = vectors
        self.sq_norms = sq_norms
        self.spans = spans(vectors.shape[0], blocks)
        self.made: dict[int, Tile] = {}
        self.claimed = 0  # tiles 0..claimed-1 are being made or made
        self.taken = 0  # tiles 0..taken-1 went to the consumer
        self.error: BaseException | None = None
        self.stopped = False
        self.cond = threading.Condition()

    def _claim(self, limit: int) -> int | None:
        """The next unclaimed tile, if there is one below ``limit`` (caller holds the lock)."""
        if self.claimed >= min(limit, len(self.spans)):
            return None
        self.claimed += 1
        return self.claimed - 1

    def _make(self, index: int) -> None:
        tile = _tile(self.vectors, self.sq_norms, self.spans[index], _torch_mm, self.screen)
        with self.cond:
            self.made[index] = tile
            self.cond.notify_all()

    def _next_for_producer(self) -> int | None:
        """The producer's next tile; waits while it is ``_AHEAD`` ahead. None: all claimed."""
        with self.cond:
            while not self.stopped:
                index = self._claim(self.taken + _AHEAD)
                if index is not None:
                    return index
                if self.claimed >= len(self.spans):
                    return None
                self.cond.wait()
            return None

    def produce(self, threads: int) -> None:
        import torch

        before = torch.get_num_threads()
        # This thread's products only (OpenMP's count is per calling thread).
        torch.set_num_threads(threads)
        try:
            while (index := self._next_for_producer()) is not None:
                self._make(index)
        except Exception as error:  # noqa: BLE001  handed to the consumer, which raises it
            with self.cond:
                self.error = error
                self.cond.notify_all()
        finally:
            torch.set_num_threads(before)

    def consume(self) -> Iterator[Tile]:
        for index in range(len(self.spans)):
            while True:
                with self.cond:
                    if self.error is not None:
                        raise self.error
                    if index in self.made:
                        tile = self.made.pop(index)
                        self.taken = index + 1
                        self.cond.notify_all()
                        break
                    mine = self._claim(index + _AHEAD + 1)
                    if mine is None:
                        self.cond.wait()
                        continue
                self._make(mine)
            yield tile

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _ahead(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    blocks: list[tuple[int, int]],
    threads: int,
    screen: Screen | None,
) -> Iterator[Tile]:
    import torch

    work = _Tiles(vectors, sq_norms, blocks, screen)
    producer = threading.Thread(
        target=work.produce, args=(threads,), name="list-products", daemon=True
    )
    before = torch.get_num_threads()
    # The consumer's own products (tiles it makes while it would wait) on its one core.
    torch.set_num_threads(1)
    producer.start()
    try:
        yield from work.consume()
    finally:
        work.stop()
        producer.join()
        torch.set_num_threads(before)
