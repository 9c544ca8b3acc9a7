"""The one exception an image source raises: a stable reason plus a message for people."""

from __future__ import annotations


class SourceError(Exception):
    """The bytes of one item cannot be had; the item fails with ``reason``, the batch goes on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _transient_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import psycopg
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    return (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        psycopg.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        kombu.exceptions.OperationalError,
    )


# The named transient failures every task retries with backoff: the database or the broker is
# briefly unreachable. Anything else is a bug or bad data and is not retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = _transient_errors()
