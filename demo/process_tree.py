"""A command run in a session of its own and stopped with everything it started.

honcho runs each Procfile process in a session of its own and forwards SIGTERM to them, so a
signal to the command's process group alone could leave them running. While the command runs,
every process below it is recorded by pid and start time; :meth:`SessionProcess.stop` signals
the group, waits, then kills by that identity whatever is left (a pid the kernel hands to a
later process is never mistaken for ours). The demo's stack and the tests' services both use it.
"""

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


def start_time(pid: int) -> str | None:
    """Clock ticks since boot when ``pid`` started: with the pid, an identity the kernel never
    gives to a later process; None once it has exited (zombies included)."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` (Linux /proc), with its start time."""
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
            started = start_time(child)
            if child not in found and started is not None:
                found[child] = started
                stack.append(child)
    return found


class NotReady(Exception):
    """What was waited for did not come: the command exited, or the deadline passed."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(f"{message}\n--- last lines of the log ---\n{log_tail}")


class SessionProcess:
    """``argv`` in ``cwd`` with ``env``, its output in ``log_path`` (a fresh file per start)."""

    def __init__(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._seen: dict[int, str] = {}

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
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

    def __enter__(self) -> SessionProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_processes(self) -> None:
        """Record what runs below the command now (call it while waiting: it sees forks)."""
        if self.proc is not None:
            for pid, started in descendants(self.proc.pid).items():
                self._seen.setdefault(pid, started)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll ``check`` until it holds; :class:`NotReady` on early exit or at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.remember_processes()
            if check():
                return
            if not self.running():
                code = None if self.proc is None else self.proc.returncode
                raise NotReady(f"{' '.join(self.argv)} exited ({code}) before {what}", self.tail())
            time.sleep(0.5)
        raise NotReady(f"{what}: not there after {timeout_s:.0f} s", self.tail())

    def stop(self, grace_s: float = 30.0) -> list[int]:
        """SIGTERM the command's group, then SIGKILL whatever it started that outlives
        ``grace_s``; returns the pids that had to be killed."""
        if self.proc is None:
            return []
        self.remember_processes()
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
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = []
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        self.proc = None
        return killed

    def leftovers(self) -> list[int]:
        """Pids started under the command that are still alive (none after a clean stop)."""
        return sorted(pid for pid, started in self._seen.items() if start_time(pid) == started)
