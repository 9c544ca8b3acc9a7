"""Model-version fixtures: whole-photo vectors from a small random embedder (CPU-cheap)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.config import Settings, set_settings


@pytest.fixture
def version_settings(settings: Settings) -> Iterator[Settings]:
    tuned = settings.replace(
        model_dir=None,
        embedder_weights="random",
        embedder_input_size=64,
        device="cpu",
        ingest_batch_size=4,
        query_timeout_s=120.0,
    )
    set_settings(tuned)
    yield tuned
    set_settings(settings)
