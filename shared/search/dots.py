"""Float64 dot products of float32 rows, summed in one fixed order wherever they are computed.

Every exact distance of the service (shared.search.knn.exact_squared_distances) is
``||x||^2 + ||q||^2 - 2 x.q`` from these dots. A product of two float32 values is exact in
float64, so only the sums round, and their order decides the last bits. The order here: element
``k`` goes to lane ``k % 16``, each lane adds its products in increasing ``k`` from +0.0, then
the 16 lanes are added one after another. It is the same for a pair whichever side is the query,
whatever else is in the batch, and on every tier, so the web (NumPy, below) and the workers (the
compiled loop in lane_dots.c, when built) give the same bits and rank ties the same way.

Why not einsum or BLAS: BLAS orders sums by blocking and by the batch's shape (one pair's bits
would depend on its neighbours in a call), and einsum's casting loop runs at about a tenth of
the compiled lanes, which made the exact re-rank most of the full list computation.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import numpy as np

LANES = 16
# Rows per NumPy chunk: the float64 products of a chunk are its only scratch (4 MB at 2048-d).
_CHUNK_ROWS = 256
# Queries up to this size (as float32) are converted to float64 once for the whole call.
_Q64_BYTES = 16 << 20
_LIBRARY = Path(__file__).with_name("_lane_dots.so")

log = logging.getLogger(__name__)


@functools.cache
def _load_native() -> ctypes.CDLL | None:
    """The compiled lanes (scripts/build_native.sh), or None where they were not built.
    Looked for on first use, once per process."""
    if not _LIBRARY.exists():
        return None
    try:
        library = ctypes.CDLL(str(_LIBRARY))
    except OSError as error:
        log.warning("compiled dot products not loaded, NumPy instead: %s", error)
        return None
    for name in ("lane_pair_dots", "lane_pair_dots_q64"):
        function = getattr(library, name)
        function.restype = None
        function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
    return library


def native_available() -> bool:
    return _load_native() is not None


def _lane_sums(products: np.ndarray) -> np.ndarray:
    """Per row of float64 products, their sum in the lane order."""
    m, dim = products.shape
    full = dim - dim % LANES
    blocks = products[:, :full].reshape(m, full // LANES, LANES)
    lanes = np.zeros((m, LANES), dtype=np.float64)
    for j in range(full // LANES):
        lanes += blocks[:, j]
    lanes[:, : dim - full] += products[:, full:]
    total = lanes[:, 0].copy()
    for lane in range(1, LANES):
        total += lanes[:, lane]
    return total


def numpy_pair_dots(
    x: np.ndarray, rows: np.ndarray, q: np.ndarray, qrows: np.ndarray
) -> np.ndarray:
    """``x[rows[p]] . q[qrows[p]]`` for every pair, in NumPy (any float dtype)."""
    out = np.empty(rows.size, dtype=np.float64)
    one_query = q.shape[0] == 1 or (qrows.size > 0 and bool((qrows == qrows[0]).all()))
    q64 = q[qrows[0]].astype(np.float64) if one_query and qrows.size else None
    for start in range(0, rows.size, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        other = q64 if q64 is not None else q[qrows[part]].astype(np.float64)
        out[part] = _lane_sums(x[rows[part]].astype(np.float64) * other)
    return out


def pair_dots(x: np.ndarray, rows: np.ndarray, q: np.ndarray, qrows: np.ndarray) -> np.ndarray:
    """``x[rows[p]] . q[qrows[p]]`` for every pair ``p``, float64, in the lane order.

    ``x`` (n, d) and ``q`` (m, d); compiled when built and both are float32, else NumPy."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    qrows = np.ascontiguousarray(qrows, dtype=np.int64)
    native = _load_native()
    if native is None or x.dtype != np.float32 or q.dtype != np.float32:
        return numpy_pair_dots(x, rows, q, qrows)
    x = np.ascontiguousarray(x)
    q = np.ascontiguousarray(q)
    if x.shape[1] != q.shape[1]:
        raise ValueError(f"dimensions differ: {x.shape[1]} and {q.shape[1]}")
    if rows.size and (rows.min() < 0 or rows.max() >= x.shape[0]):
        raise IndexError("a pair's row is outside x")
    if qrows.size and (qrows.min() < 0 or qrows.max() >= q.shape[0]):
        raise IndexError("a pair's row is outside q")
    out = np.empty(rows.size, dtype=np.float64)
    kernel = native.lane_pair_dots
    if q.shape[0] * 4 <= rows.size and q.nbytes <= _Q64_BYTES:
        # Each query serves several pairs: converted to float64 once (exactly), not per pair.
        q = q.astype(np.float64)
        kernel = native.lane_pair_dots_q64
    kernel(
        x.ctypes.data,
        rows.ctypes.data,
        q.ctypes.data,
        qrows.ctypes.data,
        ctypes.c_int64(rows.size),
        ctypes.c_int64(x.shape[1]),
        out.ctypes.data,
    )
    return out


def self_dots(x: np.ndarray) -> np.ndarray:
    """``||x_i||^2`` of every row."""
    rows = np.arange(x.shape[0], dtype=np.int64)
    return pair_dots(x, rows, x, rows)
