"""The Celery application, built from the shared settings (never from Flask).

The web tier uses it only as a client (``send_task`` by name), so it never imports ``workers``;
the workers import it and add their task modules.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.entity import Queue

from shared import task_names

if TYPE_CHECKING:
    from shared.config import Settings

QUEUE_INGEST = "ingest"
QUEUE_QUERY = "query"
QUEUE_DEFAULT = "default"
# Neighbour-list folds and cache reloads: run by the process that also answers searches, so the
# matrices they both need are held once (Procfile ``query``).
QUEUE_LISTS = "lists"
QUEUES = (QUEUE_INGEST, QUEUE_QUERY, QUEUE_DEFAULT, QUEUE_LISTS)

_TASK_QUEUES = {
    task_names.INGEST_BATCH: QUEUE_INGEST,
    task_names.START_JOB: QUEUE_DEFAULT,
    task_names.SEARCH_PHOTO: QUEUE_QUERY,
    task_names.SEARCH_ITEM: QUEUE_QUERY,
    task_names.FOLD_LISTS: QUEUE_LISTS,
    task_names.RELOAD_LISTS_CACHE: QUEUE_LISTS,
    task_names.REPAIR_LISTS_CACHE: QUEUE_LISTS,
    task_names.SWEEP_STALLED: QUEUE_DEFAULT,
    task_names.PRUNE_MEDIA: QUEUE_DEFAULT,
    task_names.BACKFILL_CROPS: QUEUE_DEFAULT,
    # Always sent to ``ingest.<version>`` by name (shared.versions.routing).
    task_names.CATCH_UP_VERSION: QUEUE_INGEST,
    task_names.PURGE_VERSION: QUEUE_DEFAULT,
}


def make_celery(
    settings: Settings,
    *,
    include: list[str] | None = None,
    task_cls: type | None = None,
    sent_events: bool = True,
) -> Celery:
    """``task_cls``: the base class of the tasks this app defines (the workers'); a sender
    defines none and leaves it unset. ``sent_events=False``: a sender that publishes no
    ``task-sent`` event (the searches' sender: see workers.tasks.query.RepliedTask)."""
    app = Celery("visrec", include=include or [], task_cls=task_cls)
    transport = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        broker_url=settings.redis_broker_url,
        # Results live with the broker: the cache role may be flushed at any time.
        result_backend=settings.redis_broker_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE_DEFAULT,
        task_queues=[Queue(name) for name in QUEUES],
        # Each task's previous name goes where it does (shared.task_names.PREVIOUS_NAMES).
        task_routes={
            name: {"queue": queue}
            for task, queue in _TASK_QUEUES.items()
            for name in task_names.names_of(task)
        },
        # A task is acknowledged only once done, and re-queued if its worker dies mid-batch:
        # every task is idempotent, so running twice is harmless; losing one is not.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The Redis visibility timeout must be set in all three places (Celery's Redis caveats),
        # and exceed the slowest batch, or a running task is redelivered to a second worker.
        # kombu looks for messages of dead workers every 10 s but scans only every 10th look by
        # default: a crashed worker's task would come back up to 100 s after its timeout.
        broker_transport_options={**transport, "unacked_restore_throttle": 1},
        result_backend_transport_options=dict(transport),
        visibility_timeout=settings.visibility_timeout_s,
        result_expires=3600,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=sent_events,
    )
    return app


_senders: dict[str, Celery] = {}
_senders_lock = threading.Lock()


def task_sender(settings: Settings) -> Celery:
    """A Celery client for ``send_task``, one per broker URL per process.

    Building a Celery app (and its broker connection pool) per message is waste on paths that
    send after every batch or delete; the worker's own app was configured at import time and may
    point at another broker than these settings (tests), hence a client keyed by URL.
    """
    with _senders_lock:
        sender = _senders.get(settings.redis_broker_url)
        if sender is None:
            sender = _senders[settings.redis_broker_url] = make_celery(settings)
        return sender


def send_unwatched(
    settings: Settings,
    name: str,
    kwargs: dict[str, Any],
    queue: str,
    countdown: float | None = None,
) -> None:
    """Send task ``name`` whose result nobody reads: without ``ignore_result`` every sender
    subscribes to the task's result channel on the broker for good (a web process would hold
    one per DELETE)."""
    task_sender(settings).send_task(
        name, kwargs=kwargs, queue=queue, countdown=countdown, ignore_result=True
    )
