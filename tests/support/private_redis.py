"""A Redis server of the test's own, on a free loopback port, for tests that pause or break
the server itself: the machine's shared Redis serves every concurrent suite, and a CLIENT PAUSE
there would stall all of them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.support.waiting import wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """Start ``redis-server`` (no persistence) while the block runs; yields its URL (db 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (the suite's services need it)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="visrec-redis-") as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        probe = redis.Redis.from_url(url, socket_timeout=2)
        try:

            def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {process.returncode}")
                try:
                    return bool(probe.ping())
                except redis.ConnectionError:
                    return False

            wait_until(answers, 30, interval=0.05, message="the private redis-server answered")
            yield url
        finally:
            probe.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
