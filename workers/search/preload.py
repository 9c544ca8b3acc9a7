"""A worker's matrices loaded before it takes its first task, not inside the first search.

A cold matrix is a full stream out of PostgreSQL (seconds at 100k items, a minute at 1M); done
inside a photo search or an item search it outlasts the web tier's 10 s wait. A solo-pool
worker calls this once at start, for its own model version: the query worker for its searches'
matrices, the lists worker (the folds) for the matrices and their lists, so that its first fold
reads only what changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.queueing import QUEUE_INGEST, QUEUE_LISTS, QUEUE_QUERY
from shared.search.loader import one_row
from shared.vocabulary import DISPLAY_ORDER
from workers.search.fold import connect, load_lists
from workers.search.index import VectorIndex, get_index

if TYPE_CHECKING:
    from shared.config import Settings


@dataclass(frozen=True)
class Plan:
    """What a worker loads before its first task, from the queues it consumes."""

    models: bool  # anything but folds: a lists-only worker embeds nothing
    matrices: bool  # it searches (query) or folds (lists)
    lists: bool  # it folds
    keeper: bool  # its matrices move only with its searches (query, no lists)


def plan_for(queues: Iterable[str]) -> Plan:
    """``queues``: the names the worker consumes (``<queue>.<version>`` counts as ``<queue>``)."""
    plain = {name.split(".", 1)[0] for name in queues}
    if not plain:  # not known: everything, as one process consuming every queue needs
        plain = {QUEUE_INGEST, QUEUE_QUERY, QUEUE_LISTS}
    search, folds = QUEUE_QUERY in plain, QUEUE_LISTS in plain
    return Plan(
        models=bool(plain - {QUEUE_LISTS}),
        matrices=search or folds,
        lists=folds,
        keeper=search and not folds,
    )


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
