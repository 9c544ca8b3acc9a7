"""Ingestion fixtures: whole-photo model settings, a loopback image server, a live worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.ingestion.helpers import ImageServer
from tests.support.model_settings import small_random_embedder
from tests.support.worker import WorkerProcess

if TYPE_CHECKING:
    from shared.config import Settings


@pytest.fixture
def ingest_settings(settings: Settings) -> Iterator[Settings]:
    """Whole-photo vectors from a small random embedder: real model work, CPU-cheap."""
    with small_random_embedder(settings) as tuned:
        yield tuned


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(worker_log: Path):
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, worker_log)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
