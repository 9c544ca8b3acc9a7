"""The named transient failures: a service the worker needs is briefly unreachable.

Every task's retry policy (workers.tasks.base) and the batch's per-photo isolation
(workers.ingestion.inference) treat exactly these as "wait and try again"; anything else is a bug
or bad data and is not retried. One tuple, so the two can never disagree.
"""

from __future__ import annotations

import kombu.exceptions
import psycopg
import redis.exceptions
from sqlalchemy import exc as sa_exc

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
