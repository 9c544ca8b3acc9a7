"""A worker's matrices loaded before it takes its first task, not inside the first search.

A cold matrix is a full stream out of PostgreSQL (seconds at 100k items, a minute at 1M); done
inside a photo search or an item search it outlasts the web tier's 10 s wait. The solo-pool
worker (the one that consumes ``query`` and ``lists``) calls this once at start, after its
models, for its own model version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.vocabulary import DISPLAY_ORDER
from workers.search.fold import connect
from workers.search.index import VectorIndex, get_index

if TYPE_CHECKING:
    from shared.config import Settings


def preload_matrices(
    settings: Settings, version: str, index: VectorIndex | None = None
) -> dict[str, int]:
    """Every kind's matrix of ``version`` brought up to now; returns the rows of each."""
    index = index or get_index()
    with connect(settings) as conn, index.lock:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            return {str(kind): index.sync(conn, version, kind).n for kind in DISPLAY_ORDER}
        finally:
            conn.execute("ROLLBACK")
