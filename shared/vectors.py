"""The vector codec: float32, little-endian, as stored in ``embeddings.vector``.

Why and what relies on it: docs/architecture.md#vector-codec.
"""

from __future__ import annotations

import numpy as np

DTYPE = np.dtype("<f4")


def encode(vector: np.ndarray) -> bytes:
    """One 1-D vector to bytes; refuses NaN/inf, which would poison every distance."""
    array = np.asarray(vector)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {array.shape}")
    as_f4 = array.astype(DTYPE, copy=False)
    if not np.isfinite(as_f4).all():
        raise ValueError("vector holds NaN or infinite values")
    return as_f4.tobytes()


def decode(data: bytes | memoryview, dim: int | None = None) -> np.ndarray:
    """Bytes to a read-only float32 vector (native byte order for fast maths)."""
    array = np.frombuffer(data, dtype=DTYPE)
    if dim is not None and array.shape[0] != dim:
        raise ValueError(f"vector has {array.shape[0]} values, expected {dim}")
    return array.astype(np.float32, copy=False)
