"""A worker's matrices loaded before it takes its first task, not inside the first search.

A cold matrix is a full stream out of PostgreSQL (seconds at 100k items, a minute at 1M); done
inside a photo search or an item search it outlasts the web tier's 10 s wait. A solo-pool
worker calls this once at start, for its own model version: the query worker for its searches'
matrices, the lists worker (the folds) for the matrices and their lists, so that its first fold
reads only what changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.search.loader import one_row
from shared.vocabulary import DISPLAY_ORDER
from workers.search.fold import connect, load_lists
from workers.search.index import VectorIndex, get_index

if TYPE_CHECKING:
    from shared.config import Settings


def preload_matrices(
    settings: Settings, version: str, index: VectorIndex | None = None, *, lists: bool = False
) -> dict[str, int]:
    """Every kind's matrix of ``version`` brought up to now (with its neighbour lists when
    ``lists``); returns the rows of each."""
    index = index or get_index()
    with connect(settings) as conn, index.lock:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            newest = int(one_row(conn.execute("SELECT coalesce(max(id), 0) FROM list_folds"))[0])
            rows = {}
            for kind in DISPLAY_ORDER:
                matrix = index.sync(conn, version, kind)
                if lists:
                    load_lists(conn, matrix, newest)
                rows[str(kind)] = matrix.n
            return rows
        finally:
            conn.execute("ROLLBACK")
