"""The broker unreachable when a job is submitted: 503 with a JSON error, nothing half-created."""

from __future__ import annotations

import hashlib
import io

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from shared.models import Embedding, Item, Job, JobItem
from tests.ingestion.test_tasks import run_all
from tests.support.images import jpeg_bytes


def post_photos(client, headers, files):
    data = {"images": [(io.BytesIO(b), name) for name, b in files]}
    return client.post(
        "/api/v1/jobs", data=data, headers=headers, content_type="multipart/form-data"
    )


def counts(db_session) -> tuple[int, int, int, int]:
    db_session.rollback()
    return tuple(
        db_session.scalar(select(func.count()).select_from(model))
        for model in (Job, JobItem, Item, Embedding)
    )


def test_a_job_submitted_while_the_broker_is_unreachable_is_refused_and_leaves_nothing(
    make_app, ingest_settings, auth_headers, db_session, broker_redis, tcp_proxy
):
    broker = make_url(ingest_settings.redis_broker_url)
    proxy = tcp_proxy(broker.host, broker.port)
    settings = ingest_settings.replace(
        redis_broker_url=f"redis://127.0.0.1:{proxy.port}/{broker.database}"
    )
    client = make_app(settings).test_client()
    old_photo, new_photo = jpeg_bytes(500), jpeg_bytes(501)
    first = post_photos(client, auth_headers, [("shirt.jpg", old_photo)])
    assert first.status_code == 202
    run_all(ingest_settings, db_session, first.get_json()["id"])
    before = client.get("/api/v1/items/shirt", headers=auth_headers).get_json()
    assert before["status"] == "ready"
    assert counts(db_session) == (1, 1, 1, 1)

    proxy.cut()
    refused = post_photos(client, auth_headers, [("shirt.jpg", new_photo), ("new.jpg", old_photo)])
    assert refused.status_code == 503
    body = refused.get_json()
    assert body["code"] == "queue_unavailable"
    assert "nothing was created" in body["message"]
    # No job, no new item, and the ready item still shows (and is found by) its old photo.
    assert counts(db_session) == (1, 1, 1, 1)
    assert client.get("/api/v1/items/new").status_code == 404
    after = client.get("/api/v1/items/shirt", headers=auth_headers).get_json()
    assert (after["status"], after["image_sha256"]) == (
        "ready",
        hashlib.sha256(old_photo).hexdigest(),
    )
    assert after["kinds"] == ["full"]

    proxy.restore()
    again = post_photos(client, auth_headers, [("shirt.jpg", new_photo), ("new.jpg", old_photo)])
    assert again.status_code == 202
    assert client.get(f"/api/v1/jobs/{again.get_json()['id']}").get_json()["total"] == 2
