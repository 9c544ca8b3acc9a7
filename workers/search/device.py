"""Where the list computation's matrix products run: torch on CUDA when the worker has a GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings


def list_device(settings: Settings) -> str:
    """ "cuda" when allowed and present, else "numpy" (BLAS on this CPU: faster than torch here)."""
    if settings.device == "cpu":
        return "numpy"
    try:
        import torch
    except ImportError:
        return "numpy"
    if torch.cuda.is_available():
        return "cuda"
    return "numpy"
