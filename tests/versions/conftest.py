"""Model-version fixtures: whole-photo vectors from a small random embedder (CPU-cheap)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.model_settings import small_random_embedder

if TYPE_CHECKING:
    from shared.config import Settings


@pytest.fixture
def version_settings(settings: Settings) -> Iterator[Settings]:
    with small_random_embedder(settings, query_timeout_s=120.0) as tuned:
        yield tuned
