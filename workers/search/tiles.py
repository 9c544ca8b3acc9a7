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
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

# Columns per tile: one tile's scratch is ``block x _TILE_COLS`` estimates, twice.
TILE_COLS = 4096
# Tiles made ahead of the consumer: bounds the scratch to this many tiles more.
_AHEAD = 3


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


def _products(
    vectors: np.ndarray, sq_norms: np.ndarray, blocks: list[tuple[int, int]], mm: Product
) -> Iterator[Tile]:
    n = vectors.shape[0]
    for start, stop in blocks:
        # -2 x is exact in float32: the product is -2 x.y with no pass of its own.
        block = vectors[start:stop] * np.float32(-2.0)
        for lo in range(start, n, TILE_COLS):
            hi = min(n, lo + TILE_COLS)
            product = mm(block, vectors[lo:hi])
            rows_side = product + sq_norms[None, lo:hi]
            own = np.arange(lo, min(hi, stop))  # the block's rows among the tile's columns
            rows_side[own - start, own - lo] = np.inf  # not its own neighbour
            later = max(lo, stop)
            cols_side = None
            if later < hi:
                cols_side = product[:, later - lo :]
                cols_side += sq_norms[start:stop, None]
            yield Tile(start, stop, lo, hi, rows_side, cols_side, later)


def _numpy_mm(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    product: np.ndarray = block @ rows.T
    return product


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tiles(
    vectors: np.ndarray, sq_norms: np.ndarray, blocks: list[tuple[int, int]]
) -> Iterator[Tile]:
    """Every tile of ``blocks`` in order; made ahead on a thread where that keeps cores busy."""
    cores = _cores()
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is None or cores < 2:
        yield from _products(vectors, sq_norms, blocks, _numpy_mm)
        return
    yield from _ahead(vectors, sq_norms, blocks, cores - 1)


def _ahead(
    vectors: np.ndarray, sq_norms: np.ndarray, blocks: list[tuple[int, int]], threads: int
) -> Iterator[Tile]:
    import torch

    made: queue.Queue[Tile | Exception | None] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def mm(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return torch.mm(torch.from_numpy(block), torch.from_numpy(rows).T).numpy()

    def put(item: Tile | Exception | None) -> None:
        while not stop.is_set():
            try:
                made.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        before = torch.get_num_threads()
        # This thread's products only (OpenMP's count is per calling thread).
        torch.set_num_threads(threads)
        try:
            for tile in _products(vectors, sq_norms, blocks, mm):
                if stop.is_set():
                    return
                put(tile)
            put(None)
        except Exception as error:  # noqa: BLE001  handed to the consumer, which raises it
            put(error)
        finally:
            torch.set_num_threads(before)

    producer = threading.Thread(target=produce, name="list-products", daemon=True)
    producer.start()
    try:
        while (item := made.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()
