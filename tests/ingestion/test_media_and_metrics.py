"""The content-addressed media store, GET /media/<key>, and GET /metrics."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid

import pytest

from shared import task_names
from shared.media import MediaStore
from shared.metrics_store import observe_task_duration
from shared.models import Job
from tests.support.images import jpeg_bytes


def test_the_same_bytes_are_stored_once_under_their_sha256(tmp_path):
    store = MediaStore(tmp_path / "media")
    data = jpeg_bytes(1)
    results = []

    def put() -> None:
        results.append(store.put_stream(io.BytesIO(data)))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = {r.key for r in results}
    assert keys == {hashlib.sha256(data).hexdigest()}
    files = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert len(files) == 1  # no temporary files left behind either
    assert store.read(keys.pop()) == data


@pytest.mark.parametrize("key", ["../../etc/passwd", "a" * 63, "A" * 64, "g" * 64, ""])
def test_anything_but_a_sha256_key_is_refused(tmp_path, key):
    with pytest.raises(KeyError):
        MediaStore(tmp_path).path_for(key)


def test_media_is_served_by_key_with_its_type_and_caching(client, settings):
    stored = MediaStore(settings.media_root).put_bytes(jpeg_bytes(2))
    response = client.get(f"/media/{stored.key}")
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert response.data == jpeg_bytes(2)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get(f"/media/{stored.key}", headers={"If-None-Match": f'"{stored.key}"'})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path", ["/media/" + "0" * 64, "/media/..%2F..%2Fetc%2Fpasswd", "/media/../app.py", "/media/x"]
)
def test_unknown_or_malformed_media_keys_answer_404_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json


def test_metrics_report_jobs_items_queues_and_task_durations(client, auth_headers, broker_redis):
    files = {"images": [(io.BytesIO(jpeg_bytes(i)), f"m{i}.jpg") for i in range(3)]}
    response = client.post(
        "/api/v1/jobs", data=files, headers=auth_headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202
    observe_task_duration(broker_redis, task_names.INGEST_BATCH, "success", 0.3)
    observe_task_duration(broker_redis, task_names.INGEST_BATCH, "success", 7.0)

    page = client.get("/metrics")
    assert page.status_code == 200
    assert page.mimetype == "text/plain"
    text = page.get_data(as_text=True)
    assert 'visrec_jobs{status="queued"} 1.0' in text
    assert 'visrec_items{status="pending"} 3.0' in text
    assert 'visrec_job_items{reason="",status="pending"} 3.0' in text
    assert 'visrec_queue_depth{queue="default"} 1.0' in text  # the start_job message
    labels = f'outcome="success",task="{task_names.INGEST_BATCH}"'
    assert f'visrec_task_duration_seconds_bucket{{le="0.5",{labels}}} 1.0' in text
    assert f'visrec_task_duration_seconds_bucket{{le="10.0",{labels}}} 2.0' in text
    assert f"visrec_task_duration_seconds_count{{{labels}}} 2.0" in text
    assert f"visrec_task_duration_seconds_sum{{{labels}}} 7.3" in text
    assert 'visrec_scrape_source_up{source="database"} 1.0' in text


def test_metrics_still_answer_when_the_broker_is_down(make_app, settings):
    client = make_app(settings.replace(redis_broker_url="redis://127.0.0.1:1/0")).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'visrec_scrape_source_up{source="broker"} 0.0' in text
    assert 'visrec_scrape_source_up{source="database"} 1.0' in text


def _jobs_queued(text: str) -> str:
    return next(
        line for line in text.splitlines() if line.startswith('visrec_jobs{status="queued"}')
    )


def test_scrapes_reuse_the_database_counts_until_they_expire(
    make_app, settings, db_session, broker_redis
):
    def add_job() -> None:
        db_session.add(Job(id=uuid.uuid4(), status="queued", source="url", total=0))
        db_session.commit()

    cached = make_app(settings.replace(metrics_db_ttl_s=3600)).test_client()
    first = cached.get("/metrics").get_data(as_text=True)
    assert _jobs_queued(first) == 'visrec_jobs{status="queued"} 0.0'
    add_job()
    # Within the TTL no GROUP BY runs again: the same counts come back, with their age.
    second = cached.get("/metrics").get_data(as_text=True)
    assert _jobs_queued(second) == 'visrec_jobs{status="queued"} 0.0'
    assert "visrec_metrics_database_age_seconds" in second
    assert 'visrec_scrape_source_up{source="database"} 1.0' in second
    # Queue depths stay live.
    broker_redis.rpush("default", b"x")
    assert 'visrec_queue_depth{queue="default"} 1.0' in cached.get("/metrics").get_data(
        as_text=True
    )
    # Once expired the counts are taken again.
    fresh = make_app(settings.replace(metrics_db_ttl_s=0)).test_client()
    assert _jobs_queued(fresh.get("/metrics").get_data(as_text=True)).endswith(" 1.0")
    add_job()
    assert _jobs_queued(fresh.get("/metrics").get_data(as_text=True)).endswith(" 2.0")
