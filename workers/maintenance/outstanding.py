"""Which jobs still have a task in the broker: queued, reserved by a worker, or waiting to retry.

Read from the Redis transport's own keys (kombu): each queue is a list (one per priority step),
and a message a worker has taken but not acknowledged (running, or held for a countdown retry)
is in the ``unacked`` hash until it is acknowledged or, after the visibility timeout, restored to
its queue. Each read is one MULTI/EXEC, so a message that moves between a queue and ``unacked``
is seen in one place or the other; a message a worker has popped but not yet recorded as
unacknowledged (well under a millisecond) is caught by reading twice, ``settle_s`` apart.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared import task_names
from shared.queueing import QUEUES
from shared.redis_clients import redis_client
from shared.versions.routing import versioned_queues

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# Under their previous names too: a message queued before an upgrade is still the job's.
JOB_TASKS = frozenset(
    name
    for task in (task_names.START_JOB, task_names.INGEST_BATCH)
    for name in task_names.names_of(task)
)
UNACKED_KEY = "unacked"
# kombu's Redis transport keeps one list per priority step: "<queue>" and "<queue>\x06\x16<n>".
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
# A snapshot reads whole queues in one MULTI: a long backlog takes longer than a usual command.
SNAPSHOT_TIMEOUT_S = 10.0


def _queue_keys(queues: Iterable[str]) -> list[str]:
    return [
        q if step == 0 else f"{q}{_PRIORITY_SEPARATOR}{step}"
        for q in queues
        for step in _PRIORITY_STEPS
    ]


def job_of_message(payload: dict[str, Any]) -> str | None:
    """The job id a start or batch message is for; None for any other message."""
    headers = payload.get("headers") or {}
    if headers.get("task") not in JOB_TASKS:
        return None
    body = payload.get("body", "")
    if (payload.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return str(args[0]) if args else None


def _snapshot(client: redis.Redis, keys: list[str]) -> set[str]:
    pipe = client.pipeline(transaction=True)
    for key in keys:
        pipe.lrange(key, 0, -1)
    pipe.hvals(UNACKED_KEY)
    *lists, unacked = pipe.execute()
    jobs: set[str] = set()
    entries = [(m, False) for messages in lists for m in messages]
    entries += [(entry, True) for entry in unacked]
    for raw, reserved in entries:
        try:
            decoded = json.loads(raw)
            # An unacknowledged message is stored as [payload, exchange, routing key].
            job = job_of_message(decoded[0] if reserved else decoded)
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("unreadable message in the broker; ignored")
            continue
        if job:
            jobs.add(job)
    return jobs


def jobs_with_tasks(broker_url: str, *, settle_s: float = 0.5) -> set[str]:
    """Ids of jobs (as strings) with a start or batch task anywhere in the broker."""
    client = redis_client(broker_url, SNAPSHOT_TIMEOUT_S)
    # Batches wait in the serving version's ``ingest.<v>`` (shared.versions.routing).
    keys = _queue_keys((*QUEUES, *versioned_queues(client)))
    first = _snapshot(client, keys)
    time.sleep(settle_s)
    return first | _snapshot(client, keys)
