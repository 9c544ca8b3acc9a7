"""Ingestion through a real Celery worker process (solo pool), real PostgreSQL and Redis."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from shared import task_names
from tests.conftest import TEST_API_KEY
from tests.ingestion.helpers import wait_for_job
from tests.support.images import jpeg_bytes
from tests.support.servers import serving
from tests.support.waiting import wait_until
from tests.support.worker import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def embedding_counts(db_session) -> dict[str, int]:
    db_session.rollback()
    rows = db_session.execute(
        text(
            "SELECT i.sku, count(e.id) FROM items i LEFT JOIN embeddings e ON e.item_id = i.id"
            " GROUP BY i.sku"
        )
    )
    return dict(rows.all())


def test_twenty_uploaded_images_are_embedded_by_a_worker(
    make_app, ingest_settings, auth_headers, start_worker, db_session, worker_log
):
    client = make_app(ingest_settings).test_client()
    start_worker(ingest_settings)
    files = {"images": [(io.BytesIO(jpeg_bytes(i)), f"sku-{i:02d}.jpg") for i in range(20)]}
    response = client.post(
        "/api/v1/jobs", data=files, headers=auth_headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202
    job = wait_for_job(client, response.get_json()["id"])
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 20, 20, 0)
    assert job["progress"] == 1.0 and job["model_version"]
    assert embedding_counts(db_session) == {f"sku-{i:02d}": 1 for i in range(20)}
    db_session.rollback()
    dims = db_session.execute(text("SELECT DISTINCT dim, octet_length(vector) FROM embeddings"))
    assert dims.all() == [(2048, 8192)]
    item = client.get("/api/v1/items/sku-07").get_json()
    assert item["status"] == "ready" and item["kinds"] == ["full"]
    assert client.get(item["image_url"]).data == jpeg_bytes(7)
    # A batch's duration is recorded when its task returns, just after the commit that may end
    # the job: the last one is waited for, not assumed there already.
    batches = f'outcome="success",task="{task_names.INGEST_BATCH}"'
    wait_until(
        lambda: (
            f"visrec_task_duration_seconds_count{{{batches}}} 5.0"
            in client.get("/metrics").get_data(as_text=True)
        ),
        30,
        interval=0.2,
        message="five batch durations in /metrics",
    )
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'visrec_jobs{status="succeeded"} 1.0' in metrics
    assert 'visrec_queue_depth{queue="ingest"} 0.0' in metrics


def test_tasks_queued_under_their_names_before_the_upgrade_still_run(
    make_app, ingest_settings, auth_headers, start_worker, db_session, broker_redis
):
    from shared.queueing import QUEUE_DEFAULT, QUEUE_INGEST, task_sender
    from tests.ingestion.test_tasks import pending_ids, submit_files

    client = make_app(ingest_settings).test_client()
    started = submit_files(client, auth_headers, [("old-start.jpg", jpeg_bytes(90))])
    batched = submit_files(client, auth_headers, [("old-batch.jpg", jpeg_bytes(91))])
    # What an older release left in the broker: the web's start messages are replaced by one
    # start under its old name, and one batch (of the other job) under its old name.
    assert broker_redis.delete(QUEUE_DEFAULT) == 1
    sender = task_sender(ingest_settings)
    old = task_names.PREVIOUS_NAMES
    sender.send_task(old[task_names.START_JOB], args=[started], ignore_result=True)
    batch = [batched, pending_ids(db_session, batched)]
    sender.send_task(old[task_names.INGEST_BATCH], args=batch, ignore_result=True)
    # Routed by name alone (no queue given), as an older sender's own routes would.
    assert broker_redis.llen(QUEUE_DEFAULT) == 1 and broker_redis.llen(QUEUE_INGEST) == 1
    start_worker(ingest_settings)
    for job_id in (started, batched):
        job = wait_for_job(client, job_id)
        assert (job["status"], job["done"], job["failed"]) == ("succeeded", 1, 0), job
    assert client.get("/api/v1/items/old-batch").get_json()["status"] == "ready"


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    make_app, ingest_settings, auth_headers, start_worker, db_session, image_server
):
    settings = ingest_settings.replace(
        visibility_timeout_s=4,
        ingest_batch_size=2,
        fetch_allow_private=True,
        fetch_allowed_ports=(image_server.httpd.server_address[1],),
    )
    client = make_app(settings).test_client()
    gate = threading.Event()
    items = []
    for i in range(8):
        # The first photo of the second batch is held until the worker has been killed.
        url = image_server.add_bytes(f"/img-{i}.jpg", jpeg_bytes(100 + i), gate if i == 2 else None)
        items.append({"sku": f"k{i}", "url": url})
    first = start_worker(settings)
    response = client.post("/api/v1/jobs", json={"items": items}, headers=auth_headers)
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    try:
        assert image_server.wait_for_request("/img-2.jpg", 240), first.tail()
        mid = client.get(f"/api/v1/jobs/{job_id}").get_json()
        assert (mid["status"], mid["done"], mid["pending"]) == ("running", 2, 6)
        first.kill()
    finally:
        gate.set()
    start_worker(settings)
    job = wait_for_job(client, job_id, timeout_s=300)
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 8, 0)
    assert embedding_counts(db_session) == {f"k{i}": 1 for i in range(8)}
    db_session.rollback()
    statuses = db_session.execute(
        text("SELECT status, count(*) FROM job_items WHERE job_id = :id GROUP BY status"),
        {"id": uuid.UUID(job_id)},
    )
    assert statuses.all() == [("succeeded", 8)]


@pytest.fixture
def live_server(make_app, ingest_settings) -> Iterator[str]:
    with serving(make_app(ingest_settings)) as url:
        yield url


def test_cli_ingests_a_folder_in_chunks_and_waits(
    live_server, ingest_settings, start_worker, tmp_path, db_session
):
    folder = tmp_path / "catalogue"
    folder.mkdir()
    for i in range(5):
        (folder / f"cli-{i}.jpg").write_bytes(jpeg_bytes(200 + i))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    start_worker(ingest_settings)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "visrec_client",
            "ingest",
            str(folder),
            "--api",
            live_server,
            "--api-key",
            TEST_API_KEY,
            "--wait",
            "--chunk-files",
            "4",
            "--poll-s",
            "0.5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr  # one file failed
    assert result.stdout.count("job ") == 2  # 6 files in chunks of 4
    assert "5 succeeded, 1 failed" in result.stdout
    assert "broken: undecodable" in result.stdout
    assert "ingest" in result.stderr and "6/6" in result.stderr  # the progress bar
    counts = embedding_counts(db_session)
    assert counts == {**{f"cli-{i}": 1 for i in range(5)}, "broken": 0}
