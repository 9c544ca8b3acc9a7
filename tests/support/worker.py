"""A real Celery worker in a child process, started the way the Procfile starts one."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.config import Settings, settings_to_env
from shared.queueing import QUEUES
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# One number per worker started by this test process: two workers of one test (a query and a
# lists worker) are two nodes, as in production, not one name counted once by the presence sets.
_STARTED = itertools.count(1)


class WorkerProcess:
    """``celery worker --pool solo`` consuming every queue; logs go to ``log_path``."""

    def __init__(self, settings: Settings, log_path: Path, queues: tuple[str, ...] = QUEUES):
        self.settings = settings
        self.log_path = log_path
        self.queues = queues
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0

    def env(self) -> dict[str, str]:
        env = {**os.environ, **settings_to_env(self.settings)}
        env.setdefault("KERAS_BACKEND", "torch")
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start(self, wait_s: float = 120.0) -> None:
        name = f"test{next(_STARTED)}-{os.getpid()}@%h"
        # Workers of one test may share a log: only this start's "ready." counts.
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "-Q",
                ",".join(self.queues),
                "-n",
                name,
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(wait_s)

    def _wait_ready(self, wait_s: float) -> None:
        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}:\n{self.tail()}")
            with self.log_path.open("rb") as log:
                log.seek(self._log_from)
                return b"ready." in log.read()

        wait_until(
            ready,
            wait_s,
            interval=0.2,
            message=lambda: f"worker ready; see {self.log_path}:\n{self.tail()}",
        )

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task with no chance to clean up or acknowledge."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
