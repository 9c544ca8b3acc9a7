"""Per-app clients (Redis, Celery) and the per-request database session.

Clients are created on first use, not in ``create_app``, so building an app connects to nothing.
Redis clients are the process's pooled ones (shared.redis_clients), with its short timeouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app, g

from shared.db import session_factory
from shared.queueing import make_celery
from shared.redis_clients import redis_client

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from sqlalchemy.orm import Session

    from shared.config import Settings


def settings() -> Settings:
    return cast("Settings", current_app.config["SETTINGS"])


def db() -> Session:
    """The request's session; closed at teardown whatever happened."""
    if "db_session" not in g:
        g.db_session = session_factory(settings())()
    return cast("Session", g.db_session)


def db_reads() -> Session:
    """The request's session for a view that only reads: each statement its own snapshot, with
    no BEGIN/ROLLBACK round trips. (A request that wrote or read first already holds a
    transaction: it simply goes on in it.)"""
    session = db()
    if not session.in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return session


def _lazy(name: str, build: Any) -> Any:
    store = current_app.extensions.setdefault("visrec_clients", {})
    client = store.get(name)
    if client is None:
        client = store[name] = build()
    return client


def cache_redis() -> redis.Redis:
    return redis_client(settings().redis_cache_url)


def broker_redis() -> redis.Redis:
    return redis_client(settings().redis_broker_url)


def celery_client() -> Celery:
    return _lazy("celery", lambda: make_celery(settings()))


def search_client() -> Celery:
    """The sender of the searches a request waits for: no ``task-sent`` event, a broker
    publish less on every page a worker answers (workers send none for searches either)."""
    return _lazy("celery_search", lambda: make_celery(settings(), sent_events=False))


def _close_session(exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close_session)
