"""One way to get a Redis client: pooled per URL and timeout, per process, with short timeouts."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import redis

from shared.redis_clients import redis_client

ROOT = Path(__file__).resolve().parents[2]
# Calls that make a Redis client or pool of their own.
CONSTRUCTORS = {"Redis", "StrictRedis", "from_url", "ConnectionPool", "BlockingConnectionPool"}


def _client_constructions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CONSTRUCTORS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}(...)")
    return found


def test_only_shared_redis_clients_makes_redis_clients() -> None:
    allowed = ROOT / "shared" / "redis_clients.py"
    found = [
        where
        for package in ("shared", "web", "workers")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != allowed
        for where in _client_constructions(path)
    ]
    assert found == []


def test_one_client_per_url_and_timeout_with_bounded_sockets(settings) -> None:
    url = settings.redis_cache_url
    client = redis_client(url)
    assert redis_client(url) is client
    assert redis_client(url, 0.5) is not client
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.0 and kwargs["socket_connect_timeout"] == 1.0
    assert redis_client(url, 0.5).connection_pool.connection_kwargs["socket_connect_timeout"] == 0.5
    assert client.ping()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_client(settings) -> None:
    parent = redis_client(settings.redis_cache_url)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it was handed the parent's client, then leave
        try:
            os.write(write, b"same" if redis_client(settings.redis_cache_url) is parent else b"own")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"own"
    assert isinstance(parent, redis.Redis)
