"""Named phases with their wall-clock time, printed as the demo goes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_started = time.monotonic()


def say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Print ``name`` on entry and its duration on exit (also when it fails)."""
    say(f"\n== {name}")
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        took = time.monotonic() - start
        outcome = "done" if ok else "FAILED"
        say(f"   {outcome} in {took:.1f} s (total {time.monotonic() - _started:.1f} s)")


def elapsed() -> float:
    return time.monotonic() - _started
