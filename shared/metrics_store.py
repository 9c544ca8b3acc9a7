"""Task durations recorded by workers on the broker, read back by the web's /metrics.

Celery workers are separate processes, so process-local Prometheus metrics would never reach
the web. Each task adds its duration to a cumulative histogram kept in a Redis hash per task
name (bucket counts, sum, count: the same shape Prometheus exposes), on the broker because the
cache role may be flushed at any time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.redis_clients import reply_text

if TYPE_CHECKING:
    import redis

# Seconds; a model batch on CPU takes seconds to minutes, a query embedding well under one.
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
KEY_PREFIX = "visrec:metrics:task_seconds:"
OUTCOMES = ("success", "failure", "retry")


def _bucket_field(bound: float) -> str:
    return "le:+Inf" if math.isinf(bound) else f"le:{bound:g}"


def observe_task_duration(client: redis.Redis, task: str, outcome: str, seconds: float) -> None:
    """Add one observation to the histogram of ``task`` ending with ``outcome``."""
    key = f"{KEY_PREFIX}{task}|{outcome}"
    pipe = client.pipeline(transaction=True)
    for bound in (*BUCKETS, math.inf):
        if seconds <= bound:
            pipe.hincrby(key, _bucket_field(bound), 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", seconds)
    pipe.execute()


@dataclass(frozen=True)
class TaskHistogram:
    task: str
    outcome: str
    # Cumulative (upper bound, count) pairs ending with +Inf, as Prometheus wants them.
    buckets: list[tuple[str, int]]
    total: float
    count: int


def read_task_durations(client: redis.Redis) -> list[TaskHistogram]:
    histograms: list[TaskHistogram] = []
    for raw_key in sorted(client.scan_iter(match=f"{KEY_PREFIX}*", count=500)):
        key = reply_text(raw_key)
        task, _, outcome = key[len(KEY_PREFIX) :].partition("|")
        fields = {reply_text(k): reply_text(v) for k, v in client.hgetall(key).items()}
        buckets = [
            (("+Inf" if math.isinf(b) else f"{b:g}"), int(fields.get(_bucket_field(b), 0)))
            for b in (*BUCKETS, math.inf)
        ]
        histograms.append(
            TaskHistogram(
                task, outcome, buckets, float(fields.get("sum", 0)), int(fields.get("count", 0))
            )
        )
    return histograms
