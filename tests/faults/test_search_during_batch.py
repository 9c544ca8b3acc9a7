"""A photo search answers while an ingestion batch is stuck: searches have their own worker
process (the Procfile's ``query``), so they never queue behind a batch (nor a fold: the
``lists`` process folds; tests/faults/test_search_during_fold.py)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from shared.queueing import QUEUE_DEFAULT, QUEUE_INGEST, QUEUE_LISTS, QUEUE_QUERY
from tests.support.images import jpeg_bytes
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _photo() -> bytes:
    pixels = np.random.default_rng(5).integers(0, 255, size=(96, 80, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_a_photo_search_answers_while_a_batch_is_held(
    make_app, ingest_settings, image_server, auth_headers, tmp_path
):
    settings = ingest_settings.replace(
        fetch_allow_private=True,
        fetch_allowed_ports=(image_server.httpd.server_address[1],),
        fetch_timeout_s=300.0,
        query_timeout_s=120.0,
    )
    client = make_app(settings).test_client()
    gate = threading.Event()
    url = image_server.add_bytes("/held.jpg", jpeg_bytes(3), gate=gate)
    ingest = WorkerProcess(settings, tmp_path / "ingest.log", queues=(QUEUE_INGEST, QUEUE_DEFAULT))
    query = WorkerProcess(settings, tmp_path / "query.log", queues=(QUEUE_QUERY,))
    lists = WorkerProcess(settings, tmp_path / "lists.log", queues=(QUEUE_LISTS,))
    ingest.start(wait_s=300)
    query.start(wait_s=300)
    lists.start(wait_s=300)
    try:
        job = client.post(
            "/api/v1/jobs", json={"items": [{"sku": "held", "url": url}]}, headers=auth_headers
        )
        assert job.status_code == 202
        # The ingest worker is now inside the batch, waiting on the photo that does not come.
        assert image_server.wait_for_request("/held.jpg", 120)
        response = client.post(
            "/api/v1/recommendations",
            data={"image": (io.BytesIO(_photo()), "look.png"), "k": "3"},
            content_type="multipart/form-data",
        )
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["results"]["full"] == []  # nothing ingested yet
        status = client.get(f"/api/v1/jobs/{job.get_json()['id']}").get_json()["status"]
        assert status == "running"  # the batch was still held while the search was answered
    finally:
        gate.set()
        ingest.stop()
        query.stop()
        lists.stop()
