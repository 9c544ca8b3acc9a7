"""A command started in its own session (a `make` target under honcho), waited on, and stopped
with everything below it: honcho puts each Procfile process in a session of its own, so a
signal to the command's group alone would leave them running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    return stat[stat.rfind(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    """Clock ticks since boot when ``pid`` started: with the pid, an identity the kernel never
    gives to a later process; None once it has exited (zombies included)."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else fields[19]


def _descendants(pid: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            started = _start_time(child)
            if child not in found and started is not None:
                found[child] = started
                stack.append(child)
    return found


class ServiceProcess:
    """``argv`` in ``cwd`` with ``env``, output in ``log_path``; a context manager that stops it."""

    def __init__(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServiceProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll ``check`` until it holds; fail with the log's tail on timeout or early exit."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{' '.join(self.argv)} exited ({self.proc.returncode}) before {what}:\n"
                    f"{self.tail()}"
                )
            time.sleep(0.5)
        raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self, grace_s: float = 30.0) -> list[int]:
        """SIGTERM the command's group (honcho passes it on), then SIGKILL whatever it started
        that outlives ``grace_s``; returns the pids that had to be killed."""
        if self.proc is None:
            return []
        started = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + grace_s
        while any(_start_time(p) == t for p, t in started.items()) and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = []
        for pid, start in started.items():
            if _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        self.proc = None
        return killed
