"""The test suite's claim on a pair of Redis databases: a suite that was killed must not keep
every later run on this machine from getting one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import redis

from tests.conftest import REDIS_HOST_URL, _claim


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_sessions_claim_is_taken_over_and_a_live_one_is_not():
    lock = redis.Redis.from_url(f"{REDIS_HOST_URL}/0")
    key = f"visrec:test-db-lock:claim-test-{uuid.uuid4().hex}"
    me = f"{socket.gethostname()}:{os.getpid()}"
    try:
        lock.set(key, f"{socket.gethostname()}:{_dead_pid()}")
        assert _claim(lock, key, me)
        assert lock.get(key) == me.encode()
        # Held by a live session (this one): another claimant is refused.
        assert not _claim(lock, key, f"{socket.gethostname()}:1")
        assert lock.get(key) == me.encode()
        # An older suite's bare-pid claim of a dead process is taken over too.
        lock.set(key, str(_dead_pid()))
        assert _claim(lock, key, me)
    finally:
        lock.delete(key)
        lock.close()
