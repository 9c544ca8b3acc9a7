"""How a worker task is declared: ``@task(task_names.X, ...)`` in place of ``@app.task``.

The task is registered under its name and under its name before this release
(shared.task_names.PREVIOUS_NAMES), each with the same function, base class and options, so
the one retry policy and failure hook apply whichever name a message carries. A retry is sent
under the name it came with; both names route to the same queue (shared.queueing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared import task_names
from workers.celery_app import app
from workers.tasks.base import VisrecTask


def task(
    name: str, *, base: type[VisrecTask] = VisrecTask, **options: Any
) -> Callable[[Callable[..., Any]], Any]:
    """Register the decorated function as the task ``name`` (and its previous name); the task
    under ``name`` is what the decorator returns."""

    def register(function: Callable[..., Any]) -> Any:
        current, *previous = task_names.names_of(name)
        for old in previous:
            app.task(function, name=old, base=base, **options)
        return app.task(function, name=current, base=base, **options)

    return register
