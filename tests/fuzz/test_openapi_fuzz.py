"""Schemathesis against the live app's OpenAPI document: every operation, its default checks.

The app runs on a real loopback HTTP server with the real PostgreSQL and Redis of the test
session, the document is fetched from it, and each operation gets positive (schema-valid) and
negative (schema-violating) examples with a key. The checks are schemathesis's defaults: no
server error, statuses, content types, headers and bodies as documented, valid data accepted and
invalid data refused. Every failure of every operation is collected and reported at once.

The gate draws with a fixed seed (tests/fuzz/plan.py), so the same code always gets the same
verdict; `make fuzz` explores with other seeds (the test marked ``fuzz``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from shared.queueing import QUEUE_QUERY
from tests.conftest import TEST_API_KEY
from tests.fuzz.plan import GATE, SEED_VARIABLE, FuzzPlan, exploring_plan
from tests.support.servers import serving
from tests.support.worker import WorkerProcess

# Business rules OpenAPI cannot state, per operation: checks that would only restate them.
WAIVED = {
    # A job's SKUs must be unique, and multipart SKUs come from the parts' file names: schema-
    # valid bodies that repeat a file name are rightly refused (422 duplicate_sku).
    "POST /api/v1/jobs": [positive_data_acceptance],
    # A photo must decode as an image: schema-valid bytes that are not one are rightly refused
    # (422 image_rejected). And multipart has no array type: a "k" made an array is sent as no
    # part at all, which is the documented default, so that "invalid" request is valid.
    "POST /api/v1/recommendations": [positive_data_acceptance, negative_data_rejection],
    # Attributes are a free-form object, and OpenAPI 3.0 cannot constrain an object's keys
    # (propertyNames is 3.1): keys holding NUL, which PostgreSQL's jsonb cannot store, are
    # rightly refused (422) although the document cannot say so.
    "PATCH /api/v1/items/{sku}": [positive_data_acceptance],
    "PATCH /api/v1/items": [positive_data_acceptance],
}


@pytest.fixture
def live_url(settings, clean_db, cache_redis, broker_redis, worker_log) -> Iterator[str]:
    from web import create_app

    # Photo searches are embedded and searched by a real query worker (small random model).
    settings = settings.replace(
        model_dir=None, embedder_weights="random", embedder_input_size=64, query_timeout_s=120.0
    )
    worker = WorkerProcess(settings, worker_log, queues=(QUEUE_QUERY,))
    worker.start(wait_s=300)
    try:
        with serving(create_app(settings)) as url:
            yield url
    finally:
        worker.stop()


class _ApiKey:
    """The test's API key, given as schemathesis's own auth: a negative example that drops the
    Authorization header is then sent without it. A key added at call time would put it back
    behind schemathesis's back, which then counts a 202 to a keyed request as accepted invalid
    data (its request "had no key")."""

    def get(self, case, context) -> str:  # noqa: ARG002  schemathesis's auth protocol
        return TEST_API_KEY

    def set(self, case, data: str, context) -> None:  # noqa: ARG002  the same protocol
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _fuzz_all(base_url: str, plan: FuzzPlan) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    schema.auth()(_ApiKey)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: dict[str, str] = {}
    for operation in operations:
        excluded = WAIVED.get(operation.label, [])

        def call(case, excluded=excluded) -> None:
            case.call_and_validate(base_url=base_url, excluded_checks=excluded)

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                plan.run(operation.as_strategy(generation_mode=mode), call)
            except Unsatisfiable:
                continue  # no parameters or body: nothing schema-violating to send
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  report every operation at once
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:4000]
    assert not failures, (
        f"seed {plan.seed}, {plan.max_examples} examples per operation and mode; replay: "
        f"{plan.replay()}\n\n" + "\n\n".join(f"== {k}:\n{v}" for k, v in failures.items())
    )


def test_every_operation_answers_as_documented(live_url):
    _fuzz_all(live_url, GATE)


EXPLORING = exploring_plan(os.environ)


@pytest.mark.fuzz
@pytest.mark.skipif(
    EXPLORING is None, reason=f"exploring mode: `make fuzz` runs it, with {SEED_VARIABLE} set"
)
def test_every_operation_answers_as_documented_for_the_exploring_seed(live_url):
    assert EXPLORING is not None
    print(f"fuzz seed {EXPLORING.seed}, {EXPLORING.max_examples} examples: {EXPLORING.replay()}")
    _fuzz_all(live_url, EXPLORING)
