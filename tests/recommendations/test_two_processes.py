"""Two real gunicorn processes read the same lists and stay exact as the catalogue moves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import text

from shared.config import Settings, settings_to_env
from tests.recommendations.helpers import add_catalogue
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebProcess:
    """``gunicorn web.wsgi:app`` as the Procfile runs it, one worker, on a loopback port."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **settings_to_env(settings), "PYTHONPATH": str(ROOT)}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--threads",
                    "4",
                    "web.wsgi:app",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.log_path = log_path

    def wait_alive(self, timeout: float = 120.0) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            return requests.get(f"{self.base}/healthz", timeout=5).status_code == 200

        # Refused, reset or a read timeout while gunicorn boots on a loaded machine: retry until
        # the deadline; only gunicorn exiting ends the wait early.
        wait_until(
            healthy,
            timeout,
            interval=0.2,
            message=lambda: f"gunicorn answering: {self.log_path.read_text()[-2000:]}",
            retry_on=(requests.RequestException,),
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def two_web_processes(settings: Settings, tmp_path: Path) -> Iterator[list[WebProcess]]:
    procs = [WebProcess(settings, tmp_path / f"web{i}.log") for i in range(2)]
    try:
        for proc in procs:
            proc.wait_alive()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def _answer_on(proc: WebProcess, path: str, generation: str, timeout: float = 30.0) -> dict:
    seen: list[str | None] = [None]

    def answer() -> dict | None:
        response = requests.get(proc.base + path, timeout=10)
        seen[0] = response.headers.get("X-Lists-Generation")
        return response.json() if response.status_code == 200 and seen[0] == generation else None

    return wait_until(
        answer,
        timeout,
        message=lambda: f"process on port {proc.port} on {generation}, still on {seen[0]}",
        retry_on=(requests.RequestException,),
    )


def test_two_gunicorn_processes_answer_alike_as_the_catalogue_moves(
    db_session, cache_redis, broker_redis, fold, two_web_processes
):
    from shared.search import lists_cache

    rng = np.random.default_rng(3)
    add_catalogue(
        db_session,
        {f"p{i:02d}": {"full": rng.standard_normal(8).astype(np.float32)} for i in range(12)},
    )
    path = "/api/v1/items/p00/recommendations?k=4&kinds=full"
    fold()
    generation = lists_cache.read_pointer(cache_redis)
    answers = [_answer_on(proc, path, generation) for proc in two_web_processes]
    assert answers[0] == answers[1]
    assert len(answers[0]["results"]["full"]) == 4

    # A new item identical to p00 comes first in both processes at once (the change the lists
    # have not seen yet is added per request), and still after the fold took it in.
    twin = db_session.execute(
        text("SELECT vector FROM embeddings e JOIN items i ON i.id = e.item_id WHERE i.sku = 'p00'")
    ).scalar_one()
    add_catalogue(db_session, {"twin": {"full": np.frombuffer(twin, dtype="<f4").copy()}})
    for _ in range(2):
        answers = [_answer_on(proc, path, generation) for proc in two_web_processes]
        assert answers[0] == answers[1]
        assert answers[0]["results"]["full"][0]["sku"] == "twin"
        assert answers[0]["results"]["full"][0]["distance"] == pytest.approx(0.0, abs=1e-6)
        assert fold()["cache"] in {"applied", "unchanged"}
