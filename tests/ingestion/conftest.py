"""Ingestion fixtures: whole-photo model settings, a loopback image server, a live worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings, set_settings
from tests.ingestion.helpers import ImageServer
from tests.support.worker import WorkerProcess


@pytest.fixture
def ingest_settings(settings: Settings) -> Iterator[Settings]:
    """Whole-photo vectors from a small random embedder: real model work, CPU-cheap."""
    tuned = settings.replace(
        model_dir=None,
        embedder_weights="random",
        embedder_input_size=64,
        device="cpu",
        ingest_batch_size=4,
    )
    set_settings(tuned)
    yield tuned
    set_settings(settings)


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
