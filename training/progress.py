"""How a training run tells its caller how far it is (the demo draws a progress bar with it).

The CLIs pass none: their progress is their framework's own log lines (Detectron2's logger,
Keras's per-epoch lines).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

# (steps done, steps in this run, the latest metrics: "loss", and "epoch" for the embedder).
# Called after every step, from the training loop: keep it cheap.
ProgressCallback = Callable[[int, int, Mapping[str, float]], None]
