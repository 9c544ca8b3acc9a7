"""Fixtures: a real, migrated PostgreSQL database and real Redis, isolated per test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.config import Settings, load_settings, set_settings
from tests.support import database

TEST_API_KEY = "test-key-0123456789"
REDIS_HOST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# Pairs of Redis database numbers (broker, cache) a test session may own; production uses 0 and
# 1, the demo 2 and 3, bench/recommend.py 12 and 13. Each session claims a free pair, so two
# suites running at once on one machine never flush each other's data.
_REDIS_DB_PAIRS = [(4, 5), (6, 7), (8, 9), (10, 11), (14, 15)]
# A claim outlives a session that died only this long (a live session holds it throughout).
_CLAIM_TTL_S = 3 * 3600


# Fixtures that build a model bundle (torch, Detectron2 and Keras at work): a test using one is
# an ml test whatever its module says, so `make test-fast` (-m "not slow and not ml") leaves it
# out without relying on every such test being marked by hand.
_BUNDLE_FIXTURES = frozenset({"test_bundle"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BUNDLE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ml)


def _holder_is_gone(holder: bytes | None) -> bool:
    """True when a claim was left by a test session of this machine that no longer runs (one
    killed by a timeout or SIGKILL never releases its pair: without this, five such sessions
    would leave every later run on this machine without a database for three hours)."""
    if holder is None:
        return True
    host, _, pid = holder.decode().rpartition(":")
    # A bare pid is an older suite's claim on this machine.
    if host not in ("", socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim(lock: redis.Redis, key: str, token: str) -> bool:
    if lock.set(key, token, nx=True, ex=_CLAIM_TTL_S):
        return True
    with lock.pipeline() as pipe:
        try:
            pipe.watch(key)
            if not _holder_is_gone(pipe.get(key)):
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.set(key, token, ex=_CLAIM_TTL_S)
            pipe.execute()
            return True
        except redis.WatchError:
            return False  # another session took it over first


@pytest.fixture(scope="session")
def redis_db_pair() -> Iterator[tuple[int, int]]:
    lock = redis.Redis.from_url(f"{REDIS_HOST_URL}/0")
    token = f"{socket.gethostname()}:{os.getpid()}"
    for pair in _REDIS_DB_PAIRS:
        key = f"visrec:test-db-lock:{pair[0]}"
        if _claim(lock, key, token):
            try:
                yield pair
            finally:
                if lock.get(key) == token.encode():
                    lock.delete(key)
                lock.close()
            return
    raise RuntimeError("all test Redis databases are claimed; is another suite still running?")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = database.create_database()
    try:
        database.upgrade_head(url)
        yield url
    finally:
        database.drop_database(url)


@pytest.fixture(scope="session")
def base_settings(
    database_url: str, redis_db_pair: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    root = tmp_path_factory.mktemp("visrec")
    broker_db, cache_db = redis_db_pair
    return load_settings(
        {
            "database_url": database_url,
            "redis_broker_url": f"{REDIS_HOST_URL}/{broker_db}",
            "redis_cache_url": f"{REDIS_HOST_URL}/{cache_db}",
            "media_root": root / "media",
            "import_root": root / "import",
            "model_dir": None,
            "embedder_weights": "random",
            "api_keys": (TEST_API_KEY,),
            "fold_debounce_s": 0.2,
            "log_json": False,
        },
        environ={},
    )


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """The settings of this test, also installed process-wide for code that reads them."""
    base_settings.media_root.mkdir(parents=True, exist_ok=True)
    assert base_settings.import_root is not None
    base_settings.import_root.mkdir(parents=True, exist_ok=True)
    set_settings(base_settings)
    yield base_settings
    set_settings(None)


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """Each test owns its rows: everything it wrote is truncated afterwards."""
    yield database_url
    database.truncate_all(database_url)


@pytest.fixture
def db_session(settings: Settings, clean_db: str) -> Iterator:
    from shared.db import session_factory

    session = session_factory(settings)()
    try:
        yield session
    finally:
        session.close()


def _redis(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def cache_redis(settings: Settings) -> Iterator[redis.Redis]:
    yield from _redis(settings.redis_cache_url)


@pytest.fixture
def broker_redis(settings: Settings) -> Iterator[redis.Redis]:
    yield from _redis(settings.redis_broker_url)


@pytest.fixture
def make_app(clean_db: str, cache_redis: redis.Redis, broker_redis: redis.Redis):
    """An app for given settings, on this test's database and Redis (``app`` is one for the
    test's own settings)."""
    from web import create_app

    def build(app_settings: Settings):
        application = create_app(app_settings)
        application.config["TESTING"] = True
        return application

    return build


@pytest.fixture
def app(settings: Settings, make_app):
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture(autouse=True)
def fresh_worker_index() -> Iterator[None]:
    """Tests that fold or search in this process play the worker: its matrices must not outlive
    a test's rows (each test's database rows, fold ids included, start afresh)."""
    from workers.search.index import reset_index

    reset_index()
    yield
    reset_index()
