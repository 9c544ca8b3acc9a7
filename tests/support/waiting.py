"""One way to wait for something in a test: poll a predicate until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    *,
    message: str | Callable[[], str] = "condition",
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """The first truthy value ``predicate()`` returns within ``timeout`` seconds.

    Exceptions in ``retry_on`` count as "not yet" (a server still booting refuses or times
    out); any other exception ends the wait at once. On timeout an AssertionError says what was
    awaited: ``message``, or what it returns when called then (the state worth seeing).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except retry_on:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            shown = message() if callable(message) else message
            raise AssertionError(f"not within {timeout:g} s: {shown}")
        time.sleep(interval)
