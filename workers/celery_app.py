"""The worker's Celery app: ``celery -A workers.celery_app worker ...``.

Built from the shared settings. Creating it connects to nothing; models load lazily in the
process that runs the tasks (never in a parent before fork: see
docs/architecture.md#queues-and-processes).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from shared.config import Settings, get_settings
from shared.logs import configure_logging
from shared.queueing import make_celery
from workers.schedule import beat_schedule
from workers.tasks.base import VisrecTask

if TYPE_CHECKING:
    from workers.search.keeper import MatrixKeeper

# Keras picks its backend at first import: workers run it on torch unless told
# (docs/architecture.md#keras-on-torch).
os.environ.setdefault("KERAS_BACKEND", "torch")

TASK_MODULES = [
    "workers.tasks.ingest",
    "workers.tasks.query",
    "workers.tasks.lists",
    "workers.tasks.maintenance",
    "workers.tasks.versions",
]

# Every task gets the one retry policy and failure hook (workers.tasks.base).
app = make_celery(get_settings(), include=TASK_MODULES, task_cls=VisrecTask)
# Read by `celery -A workers.celery_app beat` (the Procfile's beat process); workers ignore it.
app.conf.beat_schedule = beat_schedule(get_settings())

# Connects Celery signal handlers that time every task for /metrics (no I/O at import).
import workers.instrumentation  # noqa: E402

# Registers the remote-control commands of model versions (drop a retired version's matrices).
import workers.versions.control  # noqa: E402,F401

_presence: list[object] = []


@celeryd_after_setup.connect
def _version_queues(sender: str, instance: object, **_: object) -> None:
    """Consume ``<queue>.<version>`` beside each of ingest, query and lists (before any task)."""
    from shared.ml.bundle import load_bundle
    from shared.versions.routing import VERSIONED_QUEUES
    from workers.versions.startup import Presence, add_version_queues, version_info

    settings = get_settings()
    log = logging.getLogger(__name__)
    try:
        info = version_info(load_bundle(settings), settings)
    except Exception:
        log.exception("could not read the model bundle: consuming the plain queues only")
        return
    queues = instance.app.amqp.queues  # type: ignore[attr-defined]
    added = add_version_queues(queues, info.version)
    roles = [name for name in VERSIONED_QUEUES if name in queues.consume_from]
    _presence.append(Presence(settings, info, sender, roles))
    log.info("version queues", extra={"model_version": info.version, "queues": added})


@worker_ready.connect
def _register_version(**_: object) -> None:
    from workers.versions.startup import Presence

    for presence in _presence:
        if isinstance(presence, Presence):
            try:
                presence.start()
            except Exception:
                logging.getLogger(__name__).exception("could not register the model version")


@worker_shutdown.connect
def _leave_version(**_: object) -> None:
    from workers.versions.startup import Presence

    for presence in _presence:
        if isinstance(presence, Presence):
            presence.stop()


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # A forked child must not share the parent's pooled database connections.
    from shared.db import dispose_engines

    dispose_engines()
    logging.getLogger(__name__).info("worker process initialised", extra={"pid": os.getpid()})


def _consumed(sender: object) -> list[str]:
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    return list(getattr(queues, "consume_from", None) or ())


@worker_ready.connect
def _yield_cpu_to_searches(sender: object = None, **_: object) -> None:
    """A worker that only folds runs at a lower CPU priority (``LISTS_WORKER_NICE``): on two
    cores a fold's products would otherwise take half the CPU from the query worker beside it,
    and every search answered meanwhile would wait for a core (bench/README.md, folds beside
    searches). The whole process: the solo pool runs its tasks in this one."""
    from workers.search.preload import plan_for

    plan = plan_for(_consumed(sender))
    increment = get_settings().lists_worker_nice
    if plan.models or not plan.lists or increment <= 0:
        return
    niceness = os.nice(increment)
    logging.getLogger(__name__).info("folds yield the CPU", extra={"nice": niceness})


@worker_ready.connect
def _preload_models(sender: object = None, **_: object) -> None:
    """Load what this solo-pool worker's queues need before it consumes anything: the models
    (unless it only folds), then its version's matrices (query, lists) and lists (lists).

    Only for ``--pool solo`` (the model queues' pool, docs/architecture.md#queues-and-processes):
    there the main process runs the tasks, so nothing forks after CUDA is initialised. A prefork
    child must not do this in ``worker_process_init``, whose few-second limit a model build
    exceeds; it loads on first use.
    """
    pool_cls = getattr(getattr(sender, "controller", None), "pool_cls", None)
    settings = get_settings()
    if not settings.preload_models or not getattr(pool_cls, "__module__", "").endswith(".solo"):
        return
    from workers.search.preload import plan_for

    plan = plan_for(_consumed(sender))
    version = _load_models(settings) if plan.models else _bundle_version(settings)
    if version is None or not plan.matrices:
        return
    log = logging.getLogger(__name__)
    try:
        from workers.search.preload import preload_matrices

        rows = preload_matrices(settings, version, lists=plan.lists)
    except Exception:
        # A search loads what it needs on first use; the log says why it was not done here.
        log.exception("could not preload the matrices")
        return
    log.info("matrices preloaded", extra={"model_version": version, "rows": rows})
    if plan.keeper:
        from workers.search.keeper import MatrixKeeper

        keeper = MatrixKeeper(settings)
        keeper.start()
        _keepers.append(keeper)


_keepers: list[MatrixKeeper] = []


@worker_shutdown.connect
def _stop_keepers(**_: object) -> None:
    for keeper in _keepers:
        keeper.stop()


def _load_models(settings: Settings) -> str | None:
    """The models built; their version, or None when they cannot be."""
    log = logging.getLogger(__name__)
    try:
        from shared.ml.pipeline import get_pipeline

        pipeline = get_pipeline(settings)
        pipeline.load()
    except Exception:
        # The tasks report the same error per item; a worker that cannot load its models still
        # serves cache rebuilds, and the log says why ingestion fails.
        log.exception("could not preload the models")
        return None
    log.info("models preloaded", extra={"model_version": pipeline.model_version})
    return pipeline.model_version


def _bundle_version(settings: Settings) -> str | None:
    """A lists worker's version, from the bundle's hashes (it builds no model)."""
    from shared.ml.bundle import load_bundle

    try:
        return load_bundle(settings).model_version
    except Exception:
        logging.getLogger(__name__).exception("could not read the model bundle")
        return None
