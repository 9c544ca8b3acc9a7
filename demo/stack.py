"""The web + worker + query stack, started from the Procfile under honcho, and stopped completely.

honcho runs each Procfile process in its own session and forwards SIGTERM to them. The demo
starts honcho in a new session of its own, records every process below it while it runs, and on
stop signals honcho's process group, waits, then checks by pid that nothing it started is left
(SIGKILL for any straggler), so ``DEMO_ONCE=1`` leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from demo.environment import ROOT


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


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, a unique identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    tree = _children_map()
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


class Stack:
    def __init__(self, env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        # pid -> start time, so a pid the kernel reuses later is never mistaken for ours.
        self._seen: dict[int, str] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            "Procfile",
            "-p",
            str(self.port),
            "--no-colour",
            "web",
            "worker",
            "query",
        ]
        # A fresh log per run: readiness is read from it.
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_processes(self) -> None:
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid):
            started = start_time(pid)
            if started is not None:
                self._seen.setdefault(pid, started)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.remember_processes()
            if not self.running():
                raise StackError(f"the stack exited while waiting for {what}", self.log_tail())
            if check():
                return
            time.sleep(0.5)
        raise StackError(f"{what}: not ready after {timeout_s:.0f} s", self.log_tail())

    def worker_ready(self) -> bool:
        # Each Celery process prints "<name>@<host> ready." once it consumes its queues: the
        # ingest worker and the query worker (searches and neighbour lists).
        try:
            return self.log_path.read_bytes().count(b" ready.") >= 2
        except FileNotFoundError:
            return False

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        """Stop everything; returns the pids that had to be killed after the grace period."""
        if self.proc is None:
            return []
        self.remember_processes()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        killed = []
        deadline = time.monotonic() + 10
        for pid in sorted(self._seen):
            while self._ours_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._ours_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        self.proc = None
        return killed

    def _ours_alive(self, pid: int) -> bool:
        return start_time(pid) == self._seen.get(pid)

    def leftovers(self) -> list[int]:
        """Pids started under this stack that are still alive (should be none after stop)."""
        return sorted(pid for pid in self._seen if self._ours_alive(pid))


class StackError(Exception):
    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(f"{message}\n--- last lines of the stack's log ---\n{log_tail}")
