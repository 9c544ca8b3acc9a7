"""Media retention: files no item or vector references are deleted once older than the grace
period."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import text

from shared.media import MediaStore
from tests.ingestion.test_crops import TOP_BOX, BoxPipeline, gradient_jpeg
from tests.ingestion.test_tasks import run_all, submit_files
from tests.support.images import jpeg_bytes
from workers.maintenance.media_retention import prune_media

GRACE_S = 3600


@pytest.fixture
def app(ingest_settings, make_app):
    return make_app(ingest_settings)


def age(store: MediaStore, key: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(store.path_for(key), (then, then))


def test_unreferenced_media_is_deleted_after_the_grace_period_and_nothing_in_use_is(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(media_grace_s=GRACE_S)
    store = MediaStore(settings.media_root)
    job_id = submit_files(
        client,
        auth_headers,
        [("kept.jpg", jpeg_bytes(400)), ("gone.jpg", jpeg_bytes(401)), ("bad.jpg", b"not a jpeg")],
    )
    run_all(settings, db_session, job_id)
    kept = client.get("/api/v1/items/kept").get_json()["image_url"].rsplit("/", 1)[1]
    gone = client.get("/api/v1/items/gone").get_json()["image_url"].rsplit("/", 1)[1]
    bad = client.get("/api/v1/items/bad").get_json()["image_url"].rsplit("/", 1)[1]
    assert client.delete("/api/v1/items/gone", headers=auth_headers).status_code == 204
    # Bytes no row names: a finished photo search, and a search that is still running.
    searched = store.put_bytes(jpeg_bytes(402)).key
    in_flight = store.put_bytes(jpeg_bytes(403)).key
    for key in (kept, gone, bad, searched):
        age(store, key, 2 * GRACE_S)
    db_session.execute(
        text("UPDATE items SET updated_at = now() - interval '2 hours' WHERE sku = 'bad'")
    )
    db_session.commit()
    abandoned = settings.media_root / ".upload-abandoned"
    abandoned.write_bytes(b"half an upload")
    os.utime(abandoned, (time.time() - 2 * GRACE_S,) * 2)

    report = prune_media(settings)

    assert not store.exists(gone) and not store.exists(searched) and not store.exists(bad)
    assert not abandoned.exists()
    assert store.exists(kept) and store.exists(in_flight)
    assert (report.deleted, report.released_failed) == (4, 1)
    assert client.get(f"/media/{kept}").data == jpeg_bytes(400)
    assert client.get(f"/media/{gone}").status_code == 404
    failed = client.get("/api/v1/items/bad").get_json()
    assert (failed["status"], failed["image_url"]) == ("failed", None)
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["done"], job["failed"]) == (2, 1)  # history stays


def test_bytes_stored_again_are_young_again_and_survive(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(media_grace_s=GRACE_S)
    store = MediaStore(settings.media_root)
    photo = jpeg_bytes(410)
    orphan = store.put_bytes(photo).key
    age(store, orphan, 2 * GRACE_S)
    # A client uploads the same photo: stored before its row commits, and it must survive.
    assert store.put_bytes(photo).key == orphan
    prune_media(settings)
    assert store.exists(orphan)
    job_id = submit_files(client, auth_headers, [("again.jpg", photo)])
    run_all(settings, db_session, job_id)
    assert client.get("/api/v1/jobs/" + job_id).get_json()["status"] == "succeeded"


def test_a_failed_item_still_held_by_a_pending_job_keeps_its_bytes(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(media_grace_s=GRACE_S)
    store = MediaStore(settings.media_root)
    first = submit_files(client, auth_headers, [("twice.jpg", b"broken")])
    # A second job for the same bytes is submitted before the first one fails them.
    second = submit_files(client, auth_headers, [("twice.jpg", b"broken")])
    run_all(settings, db_session, first)
    key = client.get("/api/v1/items/twice").get_json()["image_url"].rsplit("/", 1)[1]
    age(store, key, 2 * GRACE_S)
    db_session.execute(text("UPDATE items SET updated_at = now() - interval '2 hours'"))
    db_session.commit()
    assert prune_media(settings).released_failed == 0
    assert store.exists(key)
    run_all(settings, db_session, second)
    # Judged on its bytes, not failed for want of them.
    (error,) = client.get(f"/api/v1/jobs/{second}").get_json()["errors"]["items"]
    assert error["reason"] == "undecodable"


def test_crops_named_by_a_vector_are_kept_and_orphaned_ones_pruned_after_the_grace(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(media_grace_s=GRACE_S)
    store = MediaStore(settings.media_root)

    def crops_of(sku: str) -> dict[str, str]:
        body = client.get(f"/api/v1/items/{sku}", headers=auth_headers).get_json()
        return {
            v["kind"]: v["crop_url"].rsplit("/", 1)[1] for v in body["vectors"] if v["crop_url"]
        }

    job_id = submit_files(
        client,
        auth_headers,
        [
            ("kept.jpg", gradient_jpeg()),
            ("deleted.jpg", gradient_jpeg(shift=20)),
            ("replaced.jpg", gradient_jpeg(shift=40)),
        ],
    )
    run_all(settings, db_session, job_id, BoxPipeline(settings))
    kept, deleted, replaced = crops_of("kept"), crops_of("deleted"), crops_of("replaced")
    assert set(kept) == set(deleted) == set(replaced) == {"top", "bottom"}
    # An item deleted; another re-photographed with no bottom any more, its top re-cut.
    assert client.delete("/api/v1/items/deleted", headers=auth_headers).status_code == 204
    job_id = submit_files(client, auth_headers, [("replaced.jpg", gradient_jpeg(shift=60))])
    run_all(settings, db_session, job_id, BoxPipeline(settings, {"top": TOP_BOX}))
    now = crops_of("replaced")
    assert set(now) == {"top"} and now["top"] != replaced["top"]
    # A crop stored by a batch that has not committed yet is young: kept too.
    in_flight = store.put_bytes(gradient_jpeg(shift=80)).key
    old = [*kept.values(), *deleted.values(), *replaced.values(), *now.values()]
    for key in old:
        age(store, key, 2 * GRACE_S)

    report = prune_media(settings)

    for key in [*kept.values(), *now.values(), in_flight]:
        assert store.exists(key), key
    for key in [*deleted.values(), *replaced.values()]:
        assert not store.exists(key), key
    assert report.deleted == 4  # the photos are young: only the orphaned crops went
    served = client.get(f"/media/{kept['top']}")
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
