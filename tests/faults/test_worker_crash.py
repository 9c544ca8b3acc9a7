"""A photo that kills the worker (segfault, OOM killer), with a real worker SIGKILLed each time
it touches that photo: bounded deliveries, then the photo fails and its batch completes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

import pytest

from tests.ingestion.helpers import wait_for_job
from tests.support.images import jpeg_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_DELIVERIES = 2


def test_a_photo_that_kills_every_worker_fails_and_the_rest_of_its_batch_completes(
    make_app, ingest_settings, auth_headers, image_server, start_worker
):
    settings = ingest_settings.replace(
        visibility_timeout_s=4,
        ingest_batch_size=4,
        fetch_allow_private=True,
        fetch_allowed_ports=(image_server.httpd.server_address[1],),
        item_max_deliveries=MAX_DELIVERIES,
    )
    client = make_app(settings).test_client()
    released = threading.Event()

    def poison(handler: BaseHTTPRequestHandler) -> None:
        released.wait(600)  # the worker never gets this photo: it is killed while it waits

    image_server.routes["/poison.jpg"] = poison
    items = [
        {"sku": "before", "url": image_server.add_bytes("/before.jpg", jpeg_bytes(700))},
        {"sku": "poison", "url": image_server.base + "/poison.jpg"},
        {"sku": "after-1", "url": image_server.add_bytes("/after-1.jpg", jpeg_bytes(701))},
        {"sku": "after-2", "url": image_server.add_bytes("/after-2.jpg", jpeg_bytes(702))},
    ]

    def poison_requests(n: int, timeout_s: float) -> bool:
        with image_server.hits:
            return image_server.hits.wait_for(
                lambda: image_server.requests.count("/poison.jpg") >= n, timeout_s
            )

    worker = start_worker(settings)
    response = client.post("/api/v1/jobs", json={"items": items}, headers=auth_headers)
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    try:
        for delivery in range(1, MAX_DELIVERIES + 1):
            assert poison_requests(delivery, 240), worker.tail()
            worker.kill()  # what a segfault does to a solo-pool worker
            worker = start_worker(settings)  # what the supervisor does next
        job = wait_for_job(client, job_id, timeout_s=300)
    finally:
        released.set()
    assert (job["status"], job["done"], job["failed"], job["pending"]) == ("partial", 3, 1, 0)
    (error,) = job["errors"]["items"]
    assert (error["sku"], error["reason"]) == ("poison", "worker_crashed")
    assert error["error"].startswith("the worker crashed on this photo")
    assert image_server.requests.count("/poison.jpg") == MAX_DELIVERIES
    for sku in ("before", "after-1", "after-2"):
        assert client.get(f"/api/v1/items/{sku}").get_json()["status"] == "ready"
