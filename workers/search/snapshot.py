"""One PostgreSQL connection per worker process for searches, each search in its own snapshot.

Opening a connection per search (a backend forked, options sent) cost a query worker as much as
the rest of a selective filter's answer, and a solo worker answers its clients one at a time:
that cost was every waiting client's. The connection is kept and reused; a search finds it
broken only by using it, and what fails first is the snapshot's BEGIN (nothing done yet), so
that one statement is retried once on a fresh connection (a PostgreSQL restart costs no search).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg

from workers.search.fold import connect

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.search.loader import PgConnection

_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_kept: dict[tuple[int, str], PgConnection] = {}
# Searches of one process hold the index lock; this one guards the dict across test threads.
_lock = threading.Lock()


def _kept_connection(settings: Settings) -> PgConnection:
    key = (os.getpid(), settings.database_url)
    with _lock:
        conn = _kept.get(key)
        if conn is None or conn.closed or conn.broken:
            conn = _kept[key] = connect(settings)
        return conn


def _drop(settings: Settings, conn: PgConnection) -> None:
    with _lock:
        if _kept.get((os.getpid(), settings.database_url)) is conn:
            del _kept[(os.getpid(), settings.database_url)]
    conn.close()


@contextmanager
def read_snapshot(settings: Settings) -> Iterator[PgConnection]:
    """This process's search connection inside a REPEATABLE READ READ ONLY transaction, rolled
    back on exit. Callers hold the index lock: one search at a time uses the connection."""
    conn = _kept_connection(settings)
    try:
        conn.execute(_BEGIN)
    except psycopg.OperationalError:
        _drop(settings, conn)
        conn = _kept_connection(settings)
        conn.execute(_BEGIN)
    try:
        yield conn
    except BaseException:
        # A statement timeout or a lost server leaves the connection unusable or mid-error.
        if conn.broken:
            _drop(settings, conn)
        else:
            conn.execute("ROLLBACK")
        raise
    conn.execute("ROLLBACK")
