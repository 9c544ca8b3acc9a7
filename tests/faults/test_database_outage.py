"""PostgreSQL unreachable in the middle of a batch until the batch has run out of retries,
through a proxy this test controls (the shared server keeps running): a real worker and a real
beat, and the job still succeeds."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.ingestion.helpers import wait_for_job
from tests.support.beat import BeatProcess
from tests.support.images import jpeg_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# How long the outage may take to outlast the batch's retries (seconds of back-off in all).
GIVE_UP_WITHIN_S = 240


@pytest.fixture
def start_beat(tmp_path) -> Iterator:
    beats: list[BeatProcess] = []

    def start(settings) -> BeatProcess:
        beat = BeatProcess(settings, tmp_path).start()
        beats.append(beat)
        return beat

    yield start
    for beat in beats:
        beat.stop()


def test_a_database_outage_outlasting_the_retries_ends_with_every_item_embedded_once(
    make_app,
    ingest_settings,
    auth_headers,
    db_session,
    image_server,
    tcp_proxy,
    start_worker,
    start_beat,
    worker_log,
):
    database = make_url(ingest_settings.database_url)
    proxy = tcp_proxy(database.host, database.port)
    common = ingest_settings.replace(
        fetch_allow_private=True,
        fetch_allowed_ports=(image_server.httpd.server_address[1],),
        ingest_batch_size=4,
    )
    # The worker and beat reach PostgreSQL only through the proxy; this test (and its API
    # client) directly, to watch. The outage ends once the retries have run out.
    workers = common.replace(
        database_url=database.set(port=proxy.port).render_as_string(hide_password=False),
        task_max_retries=3,
        sweep_interval_s=2,
        stall_after_s=5,
    )
    client = make_app(common).test_client()
    gate = threading.Event()
    items = [
        {
            "sku": f"db{i}",
            "url": image_server.add_bytes(
                f"/db-{i}.jpg", jpeg_bytes(600 + i), gate if i == 1 else None
            ),
        }
        for i in range(8)
    ]
    worker = start_worker(workers)
    start_beat(workers)
    response = client.post("/api/v1/jobs", json={"items": items}, headers=auth_headers)
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    try:
        # The first batch is under way (fetching its second photo) when the database goes.
        assert image_server.wait_for_request("/db-1.jpg", 240), worker.tail()
        proxy.cut()
    finally:
        gate.set()
    # The outage lasts until a batch has given up (not a fixed time a loaded machine might not
    # get that far in): only the sweeper can revive it then.
    wait_until(
        lambda: "task gave up after" in worker_log.read_text(),
        GIVE_UP_WITHIN_S,
        interval=0.5,
        message=lambda: f"a batch to give up; worker log:\n{worker.tail()}",
    )
    mid = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert mid["status"] == "running" and mid["pending"] == 8
    proxy.restore()

    job = wait_for_job(client, job_id, timeout_s=300)
    assert (job["status"], job["done"], job["failed"], job["pending"]) == ("succeeded", 8, 0, 0)
    db_session.rollback()
    per_item = dict(
        db_session.execute(
            text(
                "SELECT i.sku, count(e.id) FROM items i"
                " LEFT JOIN embeddings e ON e.item_id = i.id GROUP BY i.sku"
            )
        ).all()
    )
    assert per_item == {f"db{i}": 1 for i in range(8)}
    statuses = db_session.execute(
        text("SELECT status, count(*) FROM job_items WHERE job_id = :id GROUP BY status"),
        {"id": uuid.UUID(job_id)},
    )
    assert statuses.all() == [("succeeded", 8)]
    # The first batch ran out of retries during the outage: only the sweeper could revive it.
    assert "stalled job re-enqueued" in worker_log.read_text()
