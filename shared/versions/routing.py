"""Where a version's work is queued: ``<queue>.<version>`` beside the unversioned queues.

A worker consumes, besides the queues it was started with (``ingest``, ``query``, ``lists``),
the same queues suffixed with its own model version (workers.versions.startup), so work sent
to ``ingest.<v>`` reaches only workers that embed with v. The unversioned queues stay for what
any version may do: the batches of an empty system (whichever version embeds first serves) and
folds of every version at once (beat's periodic fold).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from shared import task_names
from shared.queueing import (
    QUEUE_DEFAULT,
    QUEUE_INGEST,
    QUEUE_LISTS,
    QUEUE_QUERY,
    send_unwatched,
)
from shared.redis_clients import redis_client

if TYPE_CHECKING:
    import redis
    from sqlalchemy.orm import Session

    from shared.config import Settings

VERSIONED_QUEUES = (QUEUE_INGEST, QUEUE_QUERY, QUEUE_LISTS)
CATCH_UP_PENDING_KEY = "visrec:versions:catch-up-pending:"
# A catch-up request older than this is assumed lost (its worker died before clearing it).
CATCH_UP_FLAG_TTL_S = 600
# How long a web process trusts the serving version it read (photo searches): the switch is
# seen within this, well inside the 1 s. Product pages read it in their own statement.
SERVING_TTL_S = 0.5


def versioned(queue: str, version: str | None) -> str:
    """``queue`` for ``version``'s workers only; the plain queue when no version is named."""
    return f"{queue}.{version}" if version else queue


def versioned_queues(client: redis.Redis) -> list[str]:
    """The versioned queues the broker holds messages in now (kombu's Redis transport keeps a
    queue as a list named after it; its priority lists carry a separator and are left out)."""
    names: set[str] = set()
    for queue in VERSIONED_QUEUES:
        for key in client.scan_iter(match=f"{queue}.*", count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            if "\x06\x16" not in name:
                names.add(name)
    return sorted(names)


def ingest_queue(session: Session) -> str:
    """Where a job's batches go: the serving version's workers, or any on an empty system."""
    from shared.versions.registry import serving_version

    return versioned(QUEUE_INGEST, serving_version(session))


def request_catch_up(settings: Settings, version: str, *, reason: str) -> bool:
    """Ask ``version``'s ingest workers to embed every ready item it lacks (one request in
    flight per version: the flag is set with NX and cleared by the task when it starts)."""
    client = redis_client(settings.redis_broker_url)
    if not client.set(CATCH_UP_PENDING_KEY + version, reason, nx=True, ex=CATCH_UP_FLAG_TTL_S):
        return False
    send_catch_up(settings, version, reason=reason, after_id=0)
    return True


def send_catch_up(
    settings: Settings, version: str, *, reason: str, after_id: int, pass_token: str = ""
) -> None:
    """A chunk of a pass: the first (``after_id`` 0) starts one, the next carry its token."""
    kwargs: dict[str, str | int] = {"version": version, "reason": reason, "after_id": after_id}
    if pass_token:
        kwargs["pass_token"] = pass_token
    send_unwatched(settings, task_names.CATCH_UP_VERSION, kwargs, versioned(QUEUE_INGEST, version))


def send_purge(settings: Settings, version: str, *, countdown: float | None = None) -> None:
    """Have a worker delete everything of the retired ``version`` (workers.versions.purge)."""
    send_unwatched(
        settings, task_names.PURGE_VERSION, {"version": version}, QUEUE_DEFAULT, countdown
    )


def clear_catch_up(settings: Settings, version: str) -> None:
    redis_client(settings.redis_broker_url).delete(CATCH_UP_PENDING_KEY + version)


def keep_in_step(settings: Settings, session: Session, *, besides: str | None, reason: str) -> int:
    """Every tracked version other than ``besides`` catches up (items ingested, re-photographed
    or deleted reach every version that serves, builds or is kept for a rollback). The fold of
    each is asked for too (deletions need no embedding). Returns the versions asked."""
    from shared.search.scheduling import request_fold
    from shared.versions.registry import tracked_versions

    versions = [v for v in tracked_versions(session) if v != besides]
    for version in versions:
        request_catch_up(settings, version, reason=reason)
        request_fold(settings, reason=reason, model_version=version)
    return len(versions)


def request_folds(settings: Settings, session: Session, *, reason: str) -> None:
    """A fold of every tracked version on its own workers (a delete changed them all); one of
    every version on any worker when none is tracked yet."""
    from shared.search.scheduling import request_fold
    from shared.versions.registry import tracked_versions

    versions = tracked_versions(session)
    if not versions:
        request_fold(settings, reason=reason)
    for version in versions:
        request_fold(settings, reason=reason, model_version=version)


class ServingPointer:
    """The serving version as a web process last read it, at most ``SERVING_TTL_S`` old."""

    def __init__(self) -> None:
        self._version: str | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, session: Session) -> str | None:
        from shared.versions.registry import serving_version

        now = time.monotonic()
        with self._lock:
            if now - self._read_at < SERVING_TTL_S:
                return self._version
        version = serving_version(session)
        with self._lock:
            self._version, self._read_at = version, now
        return version
