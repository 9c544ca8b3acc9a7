"""Every task's duration and outcome, recorded on the broker for the web's ``/metrics``.

Hooked on Celery's task_prerun/task_postrun signals, so every task is measured the same way
without each one wrapping itself. Recording never fails a task: a broker hiccup costs one
observation, not the work.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun

from shared.config import get_settings
from shared.metrics_store import OUTCOMES, observe_task_duration
from shared.redis_clients import redis_client

log = logging.getLogger(__name__)

_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _task_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _started.pop(task_id or "", None)
    if started is None or task is None:
        return
    outcome = (state or "failure").lower()
    if outcome not in OUTCOMES:
        outcome = "failure"
    try:
        observe_task_duration(
            redis_client(get_settings().redis_broker_url),
            task.name,
            outcome,
            time.monotonic() - started,
        )
    except redis.exceptions.RedisError:
        log.warning("could not record the task duration", extra={"task": task.name})
