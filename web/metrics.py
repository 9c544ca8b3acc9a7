"""Prometheus metrics for ``GET /metrics``.

Jobs and items by status come from PostgreSQL, queue depths from the broker (the length of each
Celery queue list), and task durations from the histograms workers record on the broker
(shared.metrics_store): Celery workers are other processes, so process-local metrics would never
reach this one. A source that is down is reported by ``visrec_scrape_source_up`` rather than
failing the whole scrape.

The database counts are full-table GROUP BYs, so a web process computes them at most once per
METRICS_DB_TTL_S (one thread at a time) and serves the same numbers in between, with their age in
``visrec_metrics_database_age_seconds``; queue depths and task durations are cheap and live.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select

from shared.metrics_store import read_task_durations
from shared.models import Embedding, Item, Job, JobItem
from shared.queueing import QUEUES
from shared.versions.routing import versioned_queues
from shared.vocabulary import ItemStatus, JobItemStatus, JobStatus, VectorKind
from web.resources import broker_redis, db, settings

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

log = logging.getLogger(__name__)


def _by_status(column: InstrumentedAttribute[str], statuses: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(statuses, 0)
    for value, n in db().execute(select(column, func.count()).group_by(column)):
        counts[value] = n
    return counts


def _database() -> Iterable[Metric]:
    jobs = GaugeMetricFamily("visrec_jobs", "Ingestion jobs by status", labels=["status"])
    for status, n in _by_status(Job.status, JobStatus).items():
        jobs.add_metric([status], n)
    job_items = GaugeMetricFamily(
        "visrec_job_items", "Job items by outcome", labels=["status", "reason"]
    )
    rows = db().execute(
        select(JobItem.status, JobItem.reason, func.count()).group_by(
            JobItem.status, JobItem.reason
        )
    )
    seen = set()
    for status, reason, n in rows:
        job_items.add_metric([status, reason or ""], n)
        seen.add(status)
    for status in JobItemStatus:
        if status not in seen:
            job_items.add_metric([status, ""], 0)
    items = GaugeMetricFamily("visrec_items", "Catalogue items by status", labels=["status"])
    for status, n in _by_status(Item.status, ItemStatus).items():
        items.add_metric([status], n)
    vectors = GaugeMetricFamily("visrec_embeddings", "Stored vectors by kind", labels=["kind"])
    for kind, n in _by_status(Embedding.kind, VectorKind).items():
        vectors.add_metric([kind], n)
    return [jobs, job_items, items, vectors]


@dataclass
class _DatabaseCounts:
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: list[Metric] | None = None
    at: float = 0.0


def _cached_database() -> Iterable[Metric]:
    cache: _DatabaseCounts = current_app.extensions.setdefault(
        "visrec_metrics_db", _DatabaseCounts()
    )
    ttl = settings().metrics_db_ttl_s
    # One thread recounts while concurrent scrapes wait for its answer rather than scan too.
    with cache.lock:
        if cache.metrics is None or time.monotonic() - cache.at >= ttl:
            cache.metrics = list(_database())
            cache.at = time.monotonic()
        metrics, at = cache.metrics, cache.at
    age = GaugeMetricFamily(
        "visrec_metrics_database_age_seconds",
        "How old the database counts of this scrape are (they are cached for METRICS_DB_TTL_S)",
        value=time.monotonic() - at,
    )
    return [*metrics, age]


def _queues() -> Iterable[Metric]:
    depth = GaugeMetricFamily(
        "visrec_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
    )
    client = broker_redis()
    queues = (*QUEUES, *versioned_queues(client))
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    for queue, n in zip(queues, pipe.execute(), strict=True):
        depth.add_metric([queue], n)
    return [depth]


def _task_durations() -> Iterable[Metric]:
    family = HistogramMetricFamily(
        "visrec_task_duration_seconds",
        "Celery task durations recorded by the workers",
        labels=["task", "outcome"],
    )
    for h in read_task_durations(broker_redis()):
        buckets = [(floatToGoString(float(le)), n) for le, n in h.buckets]
        family.add_metric([h.task, h.outcome], buckets, h.total)
    return [family]


class _ScrapeCollector(Collector):
    SOURCES: dict[str, Callable[[], Iterable[Metric]]] = {
        "database": _cached_database,
        "broker": _queues,
        "task_durations": _task_durations,
    }

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "visrec_scrape_source_up", "Whether a metrics source answered", labels=["source"]
        )
        for name, gather in self.SOURCES.items():
            try:
                metrics = list(gather())
            except Exception:  # one unreachable source must not hide the others
                log.warning("metrics source failed", extra={"source": name}, exc_info=True)
                if name == "database":
                    db().rollback()
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from metrics
        yield up


def render_metrics() -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ScrapeCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
