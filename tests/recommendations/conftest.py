"""Fixtures for the recommendation tests: an in-process rebuild and a ready app."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from shared.config import Settings


@pytest.fixture
def rebuild(settings: Settings) -> Callable[[], dict]:
    """Run the cache-rebuild task in this process, as a worker would."""
    from workers.tasks.cache import rebuild as task

    def run(reason: str = "test") -> dict:
        return task.run(reason=reason)

    return run


@pytest.fixture
def wait_for_generation() -> Callable:
    def wait(client, url: str, generation: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            response = client.get(url)
            if response.headers.get("X-Cache-Generation") == generation:
                return response
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"still on {response.headers.get('X-Cache-Generation')}, want {generation}"
                )
            time.sleep(0.05)

    return wait
