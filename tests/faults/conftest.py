"""Fault-injection fixtures: TCP proxies in front of the shared PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.ingestion.conftest import image_server, ingest_settings, start_worker  # noqa: F401
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str, int], TcpProxy]]:
    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
