"""Fixtures for the recommendation tests: folds run in this process, as a worker runs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.waiting import wait_until

if TYPE_CHECKING:
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
        seen: list[str | None] = [None]

        def on_generation():
            response = client.get(url)
            seen[0] = response.headers.get("X-Lists-Generation")
            return response if seen[0] == generation else None

        return wait_until(
            on_generation,
            timeout,
            interval=0.05,
            message=lambda: f"generation {generation}, still on {seen[0]}",
        )

    return wait
