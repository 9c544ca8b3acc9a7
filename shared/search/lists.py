"""Neighbour lists: an item's nearest other items of one kind, and their byte codec.

A list is a prefix of the exact order of every other item by (squared Euclidean distance in
float64, item id). Workers keep ``LIST_WIDTH`` entries: ``K_MAX`` (the API's largest k) plus
slack, so an item deleted from a list only forces a recomputation once a list has lost more
than the slack. ``complete`` says the list holds every other item (a small catalogue): then a
shorter list is still the whole answer.

The same bytes are stored in PostgreSQL (two columns) and in Redis (one value, flags first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The API's largest k: every list can answer it without help.
K_MAX = 100
# Entries kept beyond K_MAX: deletions eat into this before a list has to be recomputed.
LIST_SLACK = 20
LIST_WIDTH = K_MAX + LIST_SLACK

ID_DTYPE = np.dtype("<i8")
DISTANCE_DTYPE = np.dtype("<f8")
_COMPLETE = 1


@dataclass(frozen=True)
class NeighbourList:
    ids: np.ndarray  # int64, nearest first
    sq_distances: np.ndarray  # float64, ascending; ties ordered by id
    complete: bool

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def id_bytes(self) -> bytes:
        return np.asarray(self.ids, dtype=ID_DTYPE).tobytes()

    def distance_bytes(self) -> bytes:
        return np.asarray(self.sq_distances, dtype=DISTANCE_DTYPE).tobytes()

    def to_bytes(self) -> bytes:
        """One value for the cache: a flags byte, the ids, then the distances."""
        flags = _COMPLETE if self.complete else 0
        return bytes([flags]) + self.id_bytes() + self.distance_bytes()


def from_columns(id_bytes: bytes, distance_bytes: bytes, complete: bool) -> NeighbourList:
    ids = np.frombuffer(id_bytes, dtype=ID_DTYPE).astype(np.int64)
    distances = np.frombuffer(distance_bytes, dtype=DISTANCE_DTYPE).astype(np.float64)
    if ids.shape != distances.shape:
        raise ValueError(f"{ids.size} neighbour ids but {distances.size} distances")
    return NeighbourList(ids, distances, bool(complete))


def from_bytes(value: bytes) -> NeighbourList:
    """Inverse of :meth:`NeighbourList.to_bytes`."""
    if not value or (len(value) - 1) % 16:
        raise ValueError(f"a neighbour list value of {len(value)} bytes is malformed")
    n = (len(value) - 1) // 16
    body = memoryview(value)[1:]
    return from_columns(bytes(body[: n * 8]), bytes(body[n * 8 :]), bool(value[0] & _COMPLETE))
