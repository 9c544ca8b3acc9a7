"""Exact searches over this worker's matrices: an uploaded photo's vectors, or an item whose own
list is not ready (new, re-photographed, or too many of its neighbours changed at once).

Each search first brings the matrices up to one PostgreSQL snapshot (workers.search.index), so
the answer equals a brute force over the vectors PostgreSQL holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from shared.search.knn import top_k
from shared.vectors import decode
from workers.search.fold import connect
from workers.search.index import VectorIndex, get_index

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.search.loader import PgConnection

Ranked = list[tuple[int, float]]


def _search(
    index: VectorIndex,
    conn: PgConnection,
    version: str,
    queries: Mapping[str, np.ndarray],
    k: int,
    exclude_item_id: int | None,
) -> dict[str, Ranked]:
    out: dict[str, Ranked] = {}
    for kind, query in queries.items():
        matrix = index.sync(conn, version, kind)
        if matrix.n == 0:
            out[kind] = []
            continue
        exclude = None
        if exclude_item_id is not None and exclude_item_id in matrix.row_of:
            exclude = np.array([matrix.row_of[exclude_item_id]], dtype=np.int64)
        found = top_k(
            matrix.live_vectors, matrix.live_norms, matrix.live_ids, query, k, exclude_rows=exclude
        )
        ids = matrix.live_ids[found.rows]
        out[kind] = [(int(i), float(d)) for i, d in zip(ids, found.distances, strict=True)]
    return out


def search_vectors(
    settings: Settings, version: str, queries: Mapping[str, np.ndarray], k: int
) -> dict[str, Ranked]:
    """The k nearest catalogue items of each kind to each query vector, nearest first."""
    index = get_index()
    with connect(settings) as conn, index.lock:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            return _search(index, conn, version, queries, k, None)
        finally:
            conn.execute("ROLLBACK")


def search_item(
    settings: Settings, item_id: int, version: str, kinds: Sequence[str], k: int
) -> dict[str, Ranked] | None:
    """The k nearest other items for an item's own vectors now; None when the item is gone."""
    index = get_index()
    with connect(settings) as conn, index.lock:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            rows = conn.execute(
                "SELECT kind, vector FROM embeddings WHERE item_id = %s AND model_version = %s"
                " AND kind = ANY(%s)",
                (item_id, version, list(kinds)),
            ).fetchall()
            if not rows:
                exists = conn.execute("SELECT 1 FROM items WHERE id = %s", (item_id,)).fetchone()
                if exists is None:
                    return None
            queries = {kind: decode(vector) for kind, vector in rows}
            return _search(index, conn, version, queries, k, item_id)
        finally:
            conn.execute("ROLLBACK")
