"""The base class of every worker task: one retry policy for transient errors, one failure hook.

Every task of ``workers.celery_app`` is a :class:`VisrecTask` (the app's ``task_cls``). What a
task does when a service it needs is briefly unreachable (``workers.errors.TRANSIENT_ERRORS``;
anything else is a bug or bad data and is never retried) is one class attribute,
``on_transient``, set in the task decorator:

- ``retry`` (the default): retry with exponential backoff and jitter, at most
  ``TASK_MAX_RETRIES`` times, then fail with the original error. The limit is read when the error
  happens, not at import, so tests and a changed environment apply to the next retry;
- ``retry_forever``: the same backoff, never giving up: idempotent work that must happen;
- ``skip``: log one line and return ``{"skipped": <error type>}``: periodic upkeep, whose next
  run does the same work anyway;
- ``fail``: no retry: a caller is waiting for the answer now and has its own timeout.

A task body that must carry state into its retry catches the error and raises
:class:`RetryTransient` with the retry's options (``kwargs=...``).

``on_failure`` logs every failure with the task's name, id and arguments, then calls
``mark_failed`` (a no-op unless the task overrides it) so that what the task owns does not stay
pending for ever. After giving up on a transient error nothing is marked: the database that
would record it is what is missing, and the stalled-job sweeper re-enqueues the work once it is
back (README, "Faults and what happens").
"""

from __future__ import annotations

import inspect
import logging
import random
from enum import StrEnum
from typing import Any

from celery import Task
from typing_extensions import override

from shared.config import get_settings
from workers.errors import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

BACKOFF_CAP_S = 60.0


class TransientPolicy(StrEnum):
    RETRY = "retry"
    RETRY_FOREVER = "retry_forever"
    SKIP = "skip"
    FAIL = "fail"


def backoff_s(retries: int) -> float:
    """Delay before retry ``retries + 1``: 1, 2, 4 ... 60 s, plus up to 1 s of jitter so that
    workers which lost the database together do not all come back in the same instant."""
    return min(BACKOFF_CAP_S, 2.0**retries) + random.uniform(0, 1)  # noqa: S311  (retry jitter, not a secret)


class RetryTransient(Exception):
    """Raised by a task body around a transient ``error`` to retry with ``retry_options``."""

    def __init__(self, error: BaseException, **retry_options: Any) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.retry_options = retry_options


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class VisrecTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    transient_errors: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    on_transient: TransientPolicy = TransientPolicy.RETRY
    # Celery's own limit stays off: the policy above decides, from the settings of the moment.
    max_retries = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RetryTransient as wanted:
            exc, options = wanted.error, wanted.retry_options
        except self.transient_errors as caught:
            exc, options = caught, {}
        # Outside the except clauses: a re-raised error keeps its own context.
        return self._after_transient(exc, options)

    def _after_transient(self, exc: BaseException, retry_options: dict[str, Any]) -> Any:
        request = self.request
        fields = {
            "task": self.name,
            "task_id": request.id,
            "arguments": self._arguments(tuple(request.args or ()), dict(request.kwargs or {})),
            "error": _one_line(exc),
        }
        if self.on_transient == TransientPolicy.SKIP:
            log.warning("task skipped: a service is unreachable", extra=fields)
            return {"skipped": type(exc).__name__}
        retries = request.retries
        if self.on_transient == TransientPolicy.FAIL:
            raise exc
        if self.on_transient == TransientPolicy.RETRY:
            limit = get_settings().task_max_retries
            if retries >= limit:
                log.error("task gave up after %d retries", retries, extra=fields)
                raise exc
        log.warning("transient error; task will retry", extra={**fields, "retry": retries + 1})
        raise self.retry(exc=exc, countdown=backoff_s(retries), **retry_options)

    def mark_failed(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        """Record that the work this call owned failed (called with the task's own arguments)."""

    @override
    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: dict[str, Any] | None,
        einfo: Any,
    ) -> None:
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        transient = isinstance(exc, self.transient_errors)
        log.error(
            "task failed",
            extra={
                "task": self.name,
                "task_id": task_id,
                "arguments": self._arguments(args, kwargs),
                "error": _one_line(exc),
                "transient": transient,
            },
        )
        if transient:
            return
        try:
            self.mark_failed(exc, *args, **kwargs)
        except Exception:
            # The hook must not replace the task's own error; the log says what was not marked.
            log.exception(
                "could not mark the task's work as failed",
                extra={"task": self.name, "task_id": task_id},
            )

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, for the log."""
        try:
            return dict(inspect.signature(self.run).bind_partial(*args, **kwargs).arguments)
        except (TypeError, ValueError):
            return {"args": list(args), **kwargs}
