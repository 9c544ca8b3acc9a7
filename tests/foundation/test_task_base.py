"""The workers' task base class: which errors retry, how often, and what a failure marks.

Tasks run with ``apply()``: in this process, a retry at once, no worker and no broker.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from redis.exceptions import ConnectionError as RedisConnectionError
from typing_extensions import override

from shared.config import set_settings
from workers.tasks.base import RetryTransient, TransientPolicy, VisrecTask, backoff_s

_app = Celery("visrec-task-base-tests", task_cls=VisrecTask, set_as_current=False)
_names = itertools.count()


def make_task(policy: TransientPolicy, body: Callable[..., Any], base: type | None = None) -> Any:
    options: dict[str, Any] = {"on_transient": policy}
    if base is not None:
        options["base"] = base
    return _app.task(name=f"tests.task_base.{next(_names)}", **options)(body)


def always_down(attempts: list[Any]) -> Callable[..., Any]:
    def body(*args: Any, **kwargs: Any) -> None:
        attempts.append((args, kwargs))
        raise RedisConnectionError("the broker went away")

    return body


def test_a_transient_error_retries_as_often_as_the_setting_says_when_it_happens(settings) -> None:
    attempts: list[Any] = []
    task = make_task(TransientPolicy.RETRY, always_down(attempts))
    set_settings(settings.replace(task_max_retries=2))
    result = task.apply(args=["a"])
    assert result.failed()
    assert isinstance(result.result, RedisConnectionError)  # the original error, not a wrapper
    assert attempts == [(("a",), {})] * 3  # one try and two retries
    # Read at call time: the same task object obeys a changed setting.
    set_settings(settings.replace(task_max_retries=0))
    attempts.clear()
    assert task.apply(args=["a"]).failed()
    assert len(attempts) == 1


def test_retry_forever_outlasts_the_setting(settings) -> None:
    attempts: list[int] = []

    def body() -> str:
        attempts.append(1)
        if len(attempts) <= 7:
            raise RedisConnectionError("still down")
        return "done"

    set_settings(settings.replace(task_max_retries=0))
    assert make_task(TransientPolicy.RETRY_FOREVER, body).apply().get() == "done"
    assert len(attempts) == 8


def test_skip_ends_the_task_with_what_was_unreachable(settings) -> None:
    attempts: list[Any] = []
    result = make_task(TransientPolicy.SKIP, always_down(attempts)).apply()
    assert result.get() == {"skipped": "ConnectionError"}
    assert len(attempts) == 1


def test_fail_does_not_retry_for_a_caller_that_is_waiting(settings) -> None:
    attempts: list[Any] = []
    result = make_task(TransientPolicy.FAIL, always_down(attempts)).apply()
    assert result.failed() and isinstance(result.result, RedisConnectionError)
    assert len(attempts) == 1


def test_a_body_can_carry_state_into_its_retry(settings) -> None:
    seen: list[list[int] | None] = []

    def body(counted: list[int] | None = None) -> list[int]:
        seen.append(counted)
        if counted is None:
            raise RetryTransient(RedisConnectionError("blip"), kwargs={"counted": [4, 5]})
        return counted

    assert make_task(TransientPolicy.RETRY, body).apply().get() == [4, 5]
    assert seen == [None, [4, 5]]


def test_other_errors_are_not_retried_and_mark_what_the_task_owns_as_failed(settings) -> None:
    marked: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    attempts: list[str] = []

    class Marking(VisrecTask):
        def mark_failed(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
            marked.append((type(exc).__name__, args, kwargs))

    def body(job: str, *, bad: bool) -> None:
        attempts.append(job)
        if bad:
            raise ValueError("a bug, or bad data")
        raise RedisConnectionError("down")

    task = make_task(TransientPolicy.RETRY, body, base=Marking)
    set_settings(settings.replace(task_max_retries=1))
    result = task.apply(args=["job-1"], kwargs={"bad": True})
    assert result.failed() and isinstance(result.result, ValueError)
    assert attempts == ["job-1"]
    assert marked == [("ValueError", ("job-1",), {"bad": True})]
    # Giving up on a transient error marks nothing: the sweeper re-enqueues the work later.
    marked.clear()
    assert task.apply(args=["job-2"], kwargs={"bad": False}).failed()
    assert attempts == ["job-1", "job-2", "job-2"]
    assert marked == []


def test_a_failing_failure_hook_does_not_hide_the_task_error(settings) -> None:
    class Broken(VisrecTask):
        @override
        def mark_failed(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
            raise RedisConnectionError("cannot record it either")

    def body() -> None:
        raise KeyError("the real problem")

    result = make_task(TransientPolicy.RETRY, body, base=Broken).apply()
    assert result.failed() and isinstance(result.result, KeyError)


@pytest.mark.parametrize("retries", range(12))
def test_backoff_doubles_up_to_a_minute_with_up_to_a_second_of_jitter(retries: int) -> None:
    floor = min(60.0, 2.0**retries)
    delays = {backoff_s(retries) for _ in range(20)}
    assert all(floor <= d < floor + 1 for d in delays)
    assert len(delays) > 1  # jittered: workers that failed together do not return together


def test_every_worker_task_has_the_base_and_its_policy() -> None:
    from shared import task_names
    from workers.celery_app import app

    app.loader.import_default_modules()
    expected = {
        task_names.START_JOB: TransientPolicy.RETRY,
        task_names.INGEST_BATCH: TransientPolicy.RETRY,
        task_names.FOLD_LISTS: TransientPolicy.RETRY_FOREVER,
        task_names.RELOAD_LISTS_CACHE: TransientPolicy.RETRY_FOREVER,
        task_names.REPAIR_LISTS_CACHE: TransientPolicy.SKIP,
        task_names.SWEEP_STALLED: TransientPolicy.SKIP,
        task_names.PRUNE_MEDIA: TransientPolicy.SKIP,
        task_names.BACKFILL_CROPS: TransientPolicy.RETRY,
        task_names.SEARCH_PHOTO: TransientPolicy.FAIL,
        task_names.SEARCH_ITEM: TransientPolicy.FAIL,
        # A build or a retire must not be dropped by a broker or database blip.
        task_names.CATCH_UP_VERSION: TransientPolicy.RETRY_FOREVER,
        task_names.PURGE_VERSION: TransientPolicy.RETRY_FOREVER,
        # Beat sends the next check after its interval.
        task_names.RESUME_BUILDS: TransientPolicy.SKIP,
    }
    # A message under a task's previous name gets the same task: same base, same policy.
    expected.update(
        {
            task_names.PREVIOUS_NAMES[name]: p
            for name, p in expected.items()
            if name in task_names.PREVIOUS_NAMES  # a task new in this release has none
        }
    )
    ours = {name: task for name, task in app.tasks.items() if name.startswith("workers.")}
    assert set(ours) == set(expected)
    for name, task in ours.items():
        assert isinstance(task, VisrecTask), name
        assert task.on_transient == expected[name], name


def test_a_task_is_named_where_it_lives_and_its_previous_name_runs_it_on_the_same_queue() -> None:
    from shared import task_names
    from workers.celery_app import app

    app.loader.import_default_modules()
    assert len(task_names.PREVIOUS_NAMES) == 9
    previous_names = set(task_names.PREVIOUS_NAMES.values())
    for name, task in app.tasks.items():
        if name.startswith("workers.") and name not in previous_names:
            assert name == f"{task.run.__module__}.{task.run.__name__}"
    for name, previous in task_names.PREVIOUS_NAMES.items():
        task, old = app.tasks[name], app.tasks[previous]
        assert name == f"{task.run.__module__}.{task.run.__name__}"
        assert old.run is task.run and type(old).__mro__[1] is type(task).__mro__[1], previous
        queue = app.amqp.router.route({}, name)["queue"].name
        assert app.amqp.router.route({}, previous)["queue"].name == queue, previous
