"""The ingestion tasks called in-process (no worker): outcomes, idempotence, skips, deletes."""

from __future__ import annotations

import io
import threading
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from shared import task_names
from shared.db import session_scope
from shared.ingest_state import refresh_job
from shared.models import Embedding, Item, JobItem
from tests.support.images import jpeg_bytes, png_declaring
from tests.support.waiting import wait_until
from workers.tasks import ingest


class CountingPipeline:
    """The real pipeline, counting how many photos it was asked to process."""

    def __init__(self, settings, model_version: str | None = None) -> None:
        self.inner = ingest.get_pipeline_for(settings)
        self.model_version = model_version or self.inner.model_version
        self.photos = 0

    def process(self, images):
        self.photos += len(images)
        return self.inner.process(images)


def submit_files(client, headers, files) -> str:
    data = {"images": [(io.BytesIO(b), name) for name, b in files]}
    response = client.post(
        "/api/v1/jobs", data=data, headers=headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def pending_ids(db_session, job_id: str) -> list[int]:
    db_session.rollback()
    return list(
        db_session.scalars(
            select(JobItem.id)
            .where(JobItem.job_id == uuid.UUID(job_id), JobItem.status == "pending")
            .order_by(JobItem.position)
        )
    )


def run_all(settings, db_session, job_id: str, pipeline=None) -> ingest.BatchReport:
    return ingest.run_batch(settings, uuid.UUID(job_id), pending_ids(db_session, job_id), pipeline)


def vectors_of(db_session, sku: str) -> list[Embedding]:
    db_session.rollback()
    return list(
        db_session.scalars(
            select(Embedding).join(Item).where(Item.sku == sku).order_by(Embedding.kind)
        )
    )


@pytest.fixture
def app(ingest_settings, make_app):
    return make_app(ingest_settings)


def test_bad_files_fail_as_items_while_good_ones_succeed(
    client, auth_headers, ingest_settings, db_session
):
    good = jpeg_bytes(10)
    truncated = good[: len(good) // 2]
    job_id = submit_files(
        client,
        auth_headers,
        [
            ("good-1.jpg", good),
            ("empty.jpg", b""),
            ("text.jpg", b"this is not an image at all\n"),
            ("truncated.jpg", truncated),
            ("bomb.png", png_declaring(30000, 30000)),
            ("good-2.jpg", jpeg_bytes(11)),
        ],
    )
    report = run_all(ingest_settings, db_session, job_id)
    assert (report.succeeded, report.failed) == (2, 4)

    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["done"], job["failed"], job["progress"]) == ("partial", 2, 4, 1.0)
    reasons = {e["sku"]: e["reason"] for e in job["errors"]["items"]}
    assert reasons == {
        "empty": "undecodable",
        "text": "undecodable",
        "truncated": "undecodable",
        "bomb": "too_large",
    }
    # Errors are for people: what was wrong with the file, in words, never a Python object.
    messages = {e["sku"]: e["error"] for e in job["errors"]["items"]}
    assert messages["text"].startswith("the file is not an image"), messages
    assert messages["empty"] == "the file is empty"
    assert "damaged" in messages["truncated"]
    for message in messages.values():
        assert "<" not in message and " at 0x" not in message and "Error" not in message, message
    text_item = client.get("/api/v1/items/text", headers=auth_headers).get_json()
    assert text_item["error"] == f"undecodable: {messages['text']}"
    for sku in ("good-1", "good-2"):
        item = client.get(f"/api/v1/items/{sku}").get_json()
        assert item["status"] == "ready" and item["kinds"] == ["full"]
        assert client.get(item["image_url"]).status_code == 200
        assert [v.dim for v in vectors_of(db_session, sku)] == [2048]
    for sku in reasons:
        response = client.get(f"/api/v1/items/{sku}")
        assert response.status_code == 200
        assert response.get_json()["status"] == "failed"
        assert vectors_of(db_session, sku) == []


def test_urls_to_private_addresses_and_escaping_paths_fail_as_items(
    client, auth_headers, ingest_settings, db_session
):
    assert ingest_settings.fetch_allow_private is False
    assert ingest_settings.import_root is not None
    (ingest_settings.import_root / "ok.jpg").write_bytes(jpeg_bytes(12))
    outside = ingest_settings.import_root.parent / "secret.jpg"
    outside.write_bytes(jpeg_bytes(13))
    (ingest_settings.import_root / "link.jpg").unlink(missing_ok=True)
    (ingest_settings.import_root / "link.jpg").symlink_to(outside)
    items = [
        {"sku": "loopback", "url": "http://127.0.0.1:9/a.jpg"},
        {"sku": "metadata", "url": "http://169.254.169.254/latest/meta-data/"},
        {"sku": "dotdot", "path": "../secret.jpg"},
        {"sku": "symlink", "path": "link.jpg"},
        {"sku": "missing", "path": "nope.jpg"},
        {"sku": "ok", "path": "ok.jpg", "attributes": {"brand": "acme"}},
    ]
    response = client.post("/api/v1/jobs", json={"items": items}, headers=auth_headers)
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    run_all(ingest_settings, db_session, job_id)

    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["done"], job["failed"]) == ("partial", 1, 5)
    errors = {e["sku"]: e for e in job["errors"]["items"]}
    assert {sku: e["reason"] for sku, e in errors.items()} == {
        "loopback": "fetch_failed",
        "metadata": "fetch_failed",
        "dotdot": "path_rejected",
        "symlink": "not_found",
        "missing": "not_found",
    }
    assert "not a public address" in errors["metadata"]["error"]
    item = client.get("/api/v1/items/ok").get_json()
    assert item["status"] == "ready" and item["attributes"] == {"brand": "acme"}
    paged = client.get(f"/api/v1/jobs/{job_id}?page=2&per_page=2").get_json()["errors"]
    assert (paged["total"], paged["pages"], len(paged["items"])) == (5, 3, 2)
    assert [e["sku"] for e in paged["items"]] == ["dotdot", "symlink"]


def test_running_a_batch_twice_changes_nothing(client, auth_headers, ingest_settings, db_session):
    job_id = submit_files(client, auth_headers, [(f"s{i}.jpg", jpeg_bytes(i)) for i in range(3)])
    ids = pending_ids(db_session, job_id)
    first = ingest.process_batch.apply(args=[job_id, ids]).get()
    second = ingest.process_batch.apply(args=[job_id, ids]).get()
    assert first["succeeded"] == 3
    assert (second["succeeded"], second["failed"]) == (0, 0)
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 3, 3, 0)
    db_session.rollback()
    assert db_session.scalar(text("SELECT count(*) FROM embeddings")) == 3


def test_resubmitting_skips_unchanged_images_and_reembeds_changed_ones(
    client, auth_headers, ingest_settings, db_session
):
    pipeline = CountingPipeline(ingest_settings)
    first = submit_files(
        client, auth_headers, [("a.jpg", jpeg_bytes(20)), ("b.jpg", jpeg_bytes(21))]
    )
    run_all(ingest_settings, db_session, first, pipeline)
    assert pipeline.photos == 2
    before = {e.kind: (e.vector, e.updated_at) for e in vectors_of(db_session, "a")}

    again = submit_files(
        client, auth_headers, [("a.jpg", jpeg_bytes(20)), ("b.jpg", jpeg_bytes(99))]
    )
    assert client.get("/api/v1/items/a").get_json()["status"] == "ready"
    assert client.get("/api/v1/items/b").get_json()["status"] == "pending"
    run_all(ingest_settings, db_session, again, pipeline)
    assert pipeline.photos == 3  # only b's new photo went through the models
    job = client.get(f"/api/v1/jobs/{again}").get_json()
    assert (job["status"], job["done"], job["skipped"]) == ("succeeded", 2, 1)
    db_session.rollback()
    skipped = dict(
        db_session.execute(
            select(JobItem.sku, JobItem.skipped).where(JobItem.job_id == uuid.UUID(again))
        ).all()
    )
    assert skipped == {"a": True, "b": False}
    assert {e.kind: (e.vector, e.updated_at) for e in vectors_of(db_session, "a")} == before
    b_item = client.get("/api/v1/items/b").get_json()
    assert b_item["status"] == "ready"
    assert len(vectors_of(db_session, "b")) == 1


def test_a_second_model_version_embeds_beside_the_serving_one(
    client, auth_headers, ingest_settings, db_session
):
    old = CountingPipeline(ingest_settings)
    job = submit_files(client, auth_headers, [("a.jpg", jpeg_bytes(30))])
    run_all(ingest_settings, db_session, job, old)
    new = CountingPipeline(ingest_settings, model_version="newer-model-0001")
    job = submit_files(client, auth_headers, [("a.jpg", jpeg_bytes(30))])
    run_all(ingest_settings, db_session, job, new)
    assert new.photos == 1
    # The first version that embedded serves; its vectors of the same photo stay (rollback).
    assert sorted((e.kind, e.model_version) for e in vectors_of(db_session, "a")) == [
        ("full", old.model_version),
        ("full", "newer-model-0001"),
    ]
    doc = client.get(f"/api/v1/jobs/{job}").get_json()
    assert (doc["skipped"], doc["model_version"]) == (0, "newer-model-0001")
    models = client.get("/api/v1/models").get_json()
    assert models["serving"] == old.model_version
    assert {v["version"]: v["items"] for v in models["versions"]} == {
        old.model_version: 1,
        "newer-model-0001": 1,
    }
    # A new photo: vectors of the old one describe nothing any more, in any version.
    job = submit_files(client, auth_headers, [("a.jpg", jpeg_bytes(31))])
    run_all(ingest_settings, db_session, job, old)
    assert [(e.kind, e.model_version) for e in vectors_of(db_session, "a")] == [
        ("full", old.model_version)
    ]


def test_delete_removes_the_item_and_its_vectors(client, auth_headers, ingest_settings, db_session):
    job_id = submit_files(
        client, auth_headers, [("gone.jpg", jpeg_bytes(40)), ("kept.jpg", jpeg_bytes(41))]
    )
    run_all(ingest_settings, db_session, job_id)
    assert client.delete("/api/v1/items/gone").status_code == 401
    response = client.delete("/api/v1/items/gone", headers=auth_headers)
    assert response.status_code == 204
    assert client.get("/api/v1/items/gone").get_json()["code"] == "item_not_found"
    assert client.delete("/api/v1/items/gone", headers=auth_headers).status_code == 404
    assert vectors_of(db_session, "gone") == []
    assert len(vectors_of(db_session, "kept")) == 1
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["total"], job["done"]) == (2, 2)  # history stays


def test_start_job_splits_pending_items_into_batches(
    client, auth_headers, ingest_settings, db_session, broker_redis
):
    job_id = submit_files(client, auth_headers, [(f"p{i}.jpg", jpeg_bytes(i)) for i in range(9)])
    assert ingest.start_job.apply(args=[job_id]).get() == 3  # batch size 4
    assert broker_redis.llen("ingest") == 3
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "running"


def test_concurrent_commits_keep_counters_exact(client, auth_headers, ingest_settings, db_session):
    job_id = submit_files(client, auth_headers, [(f"c{i}.jpg", b"x%d" % i) for i in range(12)])
    ids = pending_ids(db_session, job_id)
    barrier = threading.Barrier(len(ids))

    def finish(job_item_id: int, status: str) -> None:
        with session_scope(ingest_settings) as session:
            session.execute(
                text("UPDATE job_items SET status = :s WHERE id = :id"),
                {"s": status, "id": job_item_id},
            )
            barrier.wait()
            refresh_job(session, uuid.UUID(job_id))

    threads = [
        threading.Thread(target=finish, args=(i, "failed" if n % 3 == 0 else "succeeded"))
        for n, i in enumerate(ids)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["done"], job["failed"], job["pending"]) == ("partial", 8, 4, 0)


def test_a_database_outage_retries_the_batch_with_backoff_instead_of_failing_items(
    client, auth_headers, ingest_settings, db_session, broker_redis
):
    from shared.config import set_settings
    from shared.metrics_store import read_task_durations

    job_id = submit_files(client, auth_headers, [("r.jpg", jpeg_bytes(50))])
    ids = pending_ids(db_session, job_id)
    down = ingest_settings.replace(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none", task_max_retries=2
    )
    set_settings(down)
    try:
        result = ingest.process_batch.apply(args=[job_id, ids])
    finally:
        set_settings(ingest_settings)
    assert result.failed()
    assert "OperationalError" in type(result.result).__name__
    retries = {(h.task, h.outcome): h.count for h in read_task_durations(broker_redis)}
    # 3 attempts (1 try + 2 retries): the first two end in a retry, the last one fails.
    assert retries[(task_names.INGEST_BATCH, "retry")] == 2
    assert retries[(task_names.INGEST_BATCH, "failure")] == 1
    # Nothing was decided about the item: once the database is back, a rerun embeds it.
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["pending"] == 1
    assert ingest.process_batch.apply(args=[job_id, ids]).get()["succeeded"] == 1


class CropPipeline(CountingPipeline):
    """The real embedder plus a made-up top crop, standing in for a trained detector."""

    def __init__(self, settings, with_top: bool) -> None:
        super().__init__(settings)
        self.with_top = with_top

    def process(self, images):
        from shared.ml.pipeline import Crop

        results = super().process(images)
        for result in results:
            if self.with_top and result.ok:
                result.vectors["top"] = result.vectors["full"][::-1].copy()
                result.crops["top"] = Crop(
                    "top", (1.0, 2.0, 30.0, 40.0), 2, "long_sleeved_shirt", 0.9
                )
        return results


def test_crops_are_stored_with_boxes_and_vanish_when_a_new_photo_has_none(
    client, auth_headers, ingest_settings, db_session
):
    job = submit_files(client, auth_headers, [("c.jpg", jpeg_bytes(60))])
    run_all(ingest_settings, db_session, job, CropPipeline(ingest_settings, with_top=True))
    item = client.get("/api/v1/items/c", headers=auth_headers).get_json()
    assert item["kinds"] == ["full", "top"]
    top = item["vectors"][1]
    assert (top["box"], top["label"], top["label_name"], top["score"]) == (
        [1.0, 2.0, 30.0, 40.0],
        2,
        "long_sleeved_shirt",
        0.9,
    )
    job = submit_files(client, auth_headers, [("c.jpg", jpeg_bytes(61))])
    run_all(ingest_settings, db_session, job, CropPipeline(ingest_settings, with_top=False))
    assert client.get("/api/v1/items/c").get_json()["kinds"] == ["full"]


def test_an_unexpected_error_fails_the_batch_items_instead_of_leaving_them_pending(
    client, auth_headers, ingest_settings, db_session, tmp_path
):
    from shared.config import set_settings

    job_id = submit_files(client, auth_headers, [("u1.jpg", jpeg_bytes(70)), ("u2.jpg", b"")])
    ids = pending_ids(db_session, job_id)
    set_settings(ingest_settings.replace(model_dir=tmp_path / "no-bundle-here"))
    try:
        result = ingest.process_batch.apply(args=[job_id, ids])
    finally:
        set_settings(ingest_settings)
    assert result.failed()
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["failed"], job["pending"]) == ("failed", 2, 0)
    assert {e["reason"] for e in job["errors"]["items"]} == {"internal_error"}
    for e in job["errors"]["items"]:
        assert "no-bundle-here" not in e["error"] and "Error" not in e["error"], e


def test_a_photo_replaced_during_its_batch_is_not_overwritten_by_the_old_one(
    client, auth_headers, ingest_settings, db_session
):
    import hashlib

    newer = jpeg_bytes(81)
    first = submit_files(client, auth_headers, [("race.jpg", jpeg_bytes(80))])
    later: list[str] = []

    class ResubmittingPipeline(CountingPipeline):
        def process(self, images):
            # The client replaces the photo while the models are busy with the old one.
            later.append(submit_files(client, auth_headers, [("race.jpg", newer)]))
            return super().process(images)

    run_all(ingest_settings, db_session, first, ResubmittingPipeline(ingest_settings))
    item = client.get("/api/v1/items/race", headers=auth_headers).get_json()
    assert item["status"] == "pending"
    assert item["image_sha256"] == hashlib.sha256(newer).hexdigest()
    assert vectors_of(db_session, "race") == []
    run_all(ingest_settings, db_session, later[0])
    item = client.get("/api/v1/items/race", headers=auth_headers).get_json()
    assert (item["status"], item["image_sha256"]) == ("ready", hashlib.sha256(newer).hexdigest())
    assert client.get(item["image_url"]).data == newer
    assert client.get(f"/api/v1/jobs/{first}").get_json()["status"] == "succeeded"


def test_a_batch_commit_locks_its_items_in_sku_order_as_job_creation_does(
    client, ingest_settings, db_session
):
    from shared.db import session_factory
    from shared.media import MediaStore
    from shared.models import Job

    # A catalogue whose rows were stored in the reverse of SKU order (c, b, a).
    media = MediaStore(ingest_settings.media_root)
    job = Job(id=uuid.uuid4(), status="queued", source="upload", total=3)
    db_session.add(job)
    for position, sku in enumerate(["c", "b", "a"]):
        stored = media.put_bytes(jpeg_bytes(500 + position))
        item = Item(
            sku=sku,
            status="pending",
            media_key=stored.key,
            image_sha256=stored.sha256,
            byte_size=stored.size,
        )
        db_session.add(item)
        db_session.flush()
        db_session.add(JobItem(job_id=job.id, item_id=item.id, position=position, sku=sku))
    db_session.commit()
    job_id = str(job.id)
    ids = pending_ids(db_session, job_id)
    db_session.rollback()

    # Another transaction (a job being created) holds "b": the commit must have "a" and be
    # waiting for "b", with "c" still free, exactly the order job creation takes them in.
    holder = session_factory(ingest_settings)()
    probe = session_factory(ingest_settings)()
    outcome: dict[str, object] = {}
    try:
        holder.execute(text("SELECT id FROM items WHERE sku = 'b' FOR UPDATE"))

        def run() -> None:
            try:
                outcome["report"] = ingest.run_batch(ingest_settings, uuid.UUID(job_id), ids)
            except Exception as exc:  # noqa: BLE001  (the main thread asserts on it)
                outcome["report"] = exc

        thread = threading.Thread(target=run)
        thread.start()

        def commit_waits_on_a_lock() -> bool:
            waiting = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%FROM items%'"
                )
            ).scalar_one()
            probe.rollback()
            assert waiting or thread.is_alive(), outcome
            return bool(waiting)

        wait_until(
            commit_waits_on_a_lock, 120, message=lambda: f"the commit waiting on 'b': {outcome}"
        )

        def lockable(sku: str) -> bool:
            try:
                probe.execute(
                    text("SELECT id FROM items WHERE sku = :sku FOR UPDATE NOWAIT"), {"sku": sku}
                )
                return True
            except OperationalError:
                return False
            finally:
                probe.rollback()

        assert (lockable("a"), lockable("c")) == (False, True)
    finally:
        holder.rollback()
        holder.close()
        probe.close()
    thread.join(120)
    assert isinstance(outcome.get("report"), ingest.BatchReport), outcome
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "succeeded"
