"""Settings for tests that run real model work on the CPU, as cheaply as it can be made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.config import Settings, set_settings


@contextmanager
def small_random_embedder(settings: Settings, **extra: Any) -> Iterator[Settings]:
    """Whole-photo vectors from a small random embedder, made the process's settings while the
    block runs (``extra``: more overrides); the settings before come back after it."""
    tuned = settings.replace(
        model_dir=None,
        embedder_weights="random",
        embedder_input_size=64,
        device="cpu",
        ingest_batch_size=4,
        **extra,
    )
    set_settings(tuned)
    try:
        yield tuned
    finally:
        set_settings(settings)
