"""Fixtures for the recommendation tests: folds run in this process, as a worker runs them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from shared.config import Settings


@pytest.fixture
def fold(settings: Settings) -> Iterator[Callable[..., dict]]:
    """Run the fold task in this process (a fresh worker's matrices for each test)."""
    from workers.search.index import reset_index
    from workers.tasks.lists import fold_lists

    reset_index()

    def run(reason: str = "test") -> dict:
        return fold_lists.run(reason=reason)

    yield run
    reset_index()


@pytest.fixture
def wait_for_generation() -> Callable:
    def wait(client, url: str, generation: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            response = client.get(url)
            if response.headers.get("X-Lists-Generation") == generation:
                return response
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"still on {response.headers.get('X-Lists-Generation')}, want {generation}"
                )
            time.sleep(0.05)

    return wait
