"""Helpers for the model tests."""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings, load_settings


def ml_settings(model_dir: Path | None, **overrides: object) -> Settings:
    """Settings for model tests only (no database or Redis involved)."""
    values: dict[str, object] = {
        "model_dir": model_dir,
        "embedder_weights": None,
        "device": "cpu",
        "keras_backend": "torch",
    }
    values.update(overrides)
    return load_settings(values, environ={})
