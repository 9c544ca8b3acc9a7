"""Models: garment detection (Detectron2), crop embedding (Keras ResNet50) and the bundle.

Frameworks are imported inside functions only: importing ``shared.ml`` or ``shared.ml.bundle``
costs nothing, and no model is loaded until a pipeline is first used (never in a Celery parent
before fork).
"""

from __future__ import annotations

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(setting: str | None) -> str:
    """``"cpu"`` or ``"cuda"`` for a ``Settings.device`` value (``auto`` picks CUDA if present)."""
    choice = (setting or "auto").strip().lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"DEVICE={setting!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise RuntimeError("DEVICE=cuda but torch sees no CUDA device")
    return "cuda" if available else "cpu"
