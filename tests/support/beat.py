"""A real Celery beat in a child process, started the way the Procfile starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.config import Settings, settings_to_env
from tests.support.waiting import wait_until
from tests.support.worker import ROOT


class BeatProcess:
    """``celery beat`` with a schedule file under ``folder``; logs go to ``folder/beat.log``."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.folder = folder
        self.log_path = folder / "beat.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_s: float = 120.0) -> BeatProcess:
        env = {**os.environ, **settings_to_env(self.settings), "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers.celery_app",
                    "beat",
                    "--schedule",
                    str(self.folder / "celerybeat-schedule"),
                    "--loglevel",
                    "INFO",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"beat exited early:\n{self.tail()}")
            return b"beat: Starting" in self.log_path.read_bytes()

        wait_until(started, wait_s, interval=0.2, message=lambda: f"beat started:\n{self.tail()}")
        return self

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None
