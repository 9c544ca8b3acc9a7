"""A web process does not pile up result subscriptions on the broker, however many tasks it
sends (searches, deletes, jobs): only searches wait for a result, and each lets go of its
channel once answered."""

from __future__ import annotations

import numpy as np
import pytest

from shared.queueing import QUEUE_QUERY, task_sender
from tests.recommendations.helpers import add_catalogue, replace_vector
from tests.support.worker import WorkerProcess


def _subscriptions(app, settings) -> int:
    from web.resources import celery_client, search_client

    with app.app_context():
        consumers = [
            celery_client().backend.result_consumer,
            search_client().backend.result_consumer,
            task_sender(settings).backend.result_consumer,
        ]
    return sum(len(getattr(c, "subscribed_to", ())) for c in consumers)


@pytest.mark.e2e
@pytest.mark.slow
def test_searches_and_deletes_leave_no_result_subscriptions(
    settings, app, client, db_session, auth_headers, fold, worker_log
):
    settings = settings.replace(preload_models=False, query_timeout_s=60.0)
    app.config["SETTINGS"] = settings
    rng = np.random.default_rng(0)
    add_catalogue(
        db_session,
        {f"s{i:03d}": {"full": rng.standard_normal(8).astype(np.float32)} for i in range(60)},
    )
    fold()
    worker = WorkerProcess(settings, worker_log, queues=(QUEUE_QUERY,))
    worker.start()
    try:
        for round_ in range(3):
            # Re-photographed items: their own lists are stale, so a worker answers each.
            for i in range(20):
                replace_vector(
                    db_session, f"s{i:03d}", "full", rng.standard_normal(8).astype(np.float32)
                )
            for i in range(20):
                response = client.get(f"/api/v1/items/s{i:03d}/recommendations?k=3")
                assert response.status_code == 200, response.json
            fold()
            assert _subscriptions(app, settings) <= 1, round_
        for i in range(40, 60):
            assert client.delete(f"/api/v1/items/s{i:03d}", headers=auth_headers).status_code == 204
        for i in range(30):  # job submissions: their start task's result is never read either
            body = {"items": [{"sku": f"job-{i}", "url": "https://shop.example/p.jpg"}]}
            assert client.post("/api/v1/jobs", json=body, headers=auth_headers).status_code == 202
        assert _subscriptions(app, settings) == 0
    finally:
        worker.stop()
