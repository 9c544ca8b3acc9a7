"""Engines and sessions, created on demand (never at import time).

One engine per database URL per process; one session per request or task, closed by the caller.
After a fork the child must not reuse the parent's pooled connections: ``dispose_engines`` is
called from Celery's ``worker_process_init``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from psycopg.rows import namedtuple_row
from sqlalchemy import CursorResult, Engine, Result, create_engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from shared.config import Settings

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def get_engine(settings: Settings) -> Engine:
    url = settings.database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            _engines[url] = engine
        return engine


def session_factory(settings: Settings) -> sessionmaker[Session]:
    url = settings.database_url
    factory = _factories.get(url)
    if factory is None:
        factory = sessionmaker(bind=get_engine(settings), expire_on_commit=False)
        _factories[url] = factory
    return factory


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and is always closed."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE run by ``Session.execute`` matched.

    ``Session.execute`` is typed as answering a plain ``Result``; for such statements it answers
    a ``CursorResult``, which alone counts rows.
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"a {type(result).__name__} has no row count")
    return result.rowcount or 0


def driver_rows(session: Session, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """The rows (named tuples) of a read statement in psycopg's ``%(name)s`` style, run by the
    driver on the session's own connection (its transaction, or its AUTOCOMMIT).

    For the statements every product page runs: SQLAlchemy's execution layer (compiling the
    ``text()``, its result and row objects) cost ~0.2 ms of CPU per statement, as much as the
    driver's own work. Errors are psycopg's own.
    """
    driver = session.connection().connection.driver_connection
    if driver is None:
        raise RuntimeError("the session's connection has no driver connection")
    with driver.cursor(row_factory=namedtuple_row) as cursor:
        cursor.execute(sql, params)
        rows: list[Any] = cursor.fetchall()
        return rows


def int8_array(ids: Iterable[int]) -> str:
    """Ids as a PostgreSQL array literal, for ``CAST(%(name)s AS bigint[])``: psycopg dumps a
    Python list element by element (choosing each int's type), ~5 us an id, and a product page
    sends ~50 of them per statement."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def text_array(values: Iterable[str]) -> str:
    """Strings as a PostgreSQL array literal, for ``CAST(:name AS text[])`` (see int8_array):
    each element quoted, its quotes and backslashes escaped; text holds no NUL to worry about."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
        _factories.clear()
