"""The web + worker + query stack, started from the Procfile under honcho, and stopped completely.

honcho starts in a session of its own; demo.process_tree records every process below it and
stops them all, so ``DEMO_ONCE=1`` leaves no process behind.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from demo.environment import ROOT
from demo.process_tree import NotReady, SessionProcess


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104  (free on every interface: the stack binds them)
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack(SessionProcess):
    """``honcho start web worker query lists`` from the Procfile, on ``port``."""

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            "Procfile",
            "-p",
            str(port),
            "--no-colour",
            "web",
            "worker",
            "query",
            "lists",
        ]
        super().__init__(command, ROOT, env, log_path)
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_ready(self) -> bool:
        # Each Celery process prints "<name>@<host> ready." once it consumes its queues: the
        # ingest worker, the query worker (searches) and the lists worker (neighbour lists).
        try:
            return self.log_path.read_bytes().count(b" ready.") >= 3
        except FileNotFoundError:
            return False


# What a failed start raises (the demo prints it with the log's tail).
StackError = NotReady
