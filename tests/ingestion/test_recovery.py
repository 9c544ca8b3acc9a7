"""Recovery of stuck work, in process (no worker): deliveries counted per photo, the stalled-job
sweeper, and the web/worker hand-over of a new job. Real PostgreSQL and Redis throughout."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from sqlalchemy import text

from shared import task_names
from shared.db import session_scope
from shared.ingest_state import lock_for_dispatch
from shared.models import Job, JobItem
from tests.ingestion.test_tasks import CountingPipeline, pending_ids, submit_files
from tests.support.images import jpeg_bytes
from tests.support.waiting import wait_until
from workers.ingestion import batch
from workers.maintenance.outstanding import job_of_message
from workers.maintenance.stalled import sweep_stalled_jobs
from workers.tasks import ingest


class WorkerDied(BaseException):
    """Stands in for SIGKILL: escapes every ``except Exception`` and commits nothing more."""


class CrashOn(CountingPipeline):
    """The real pipeline, except that one photo "kills the worker" whenever it is processed."""

    def __init__(self, settings, poison: bytes) -> None:
        super().__init__(settings)
        self.poison = poison
        self.seen: dict[bytes, int] = {}

    def process(self, images):
        for image in images:
            self.seen[image] = self.seen.get(image, 0) + 1
        if self.poison in images:
            raise WorkerDied()
        return super().process(images)


@pytest.fixture
def app(ingest_settings, make_app):
    return make_app(ingest_settings)


def job_items(db_session, job_id: str) -> dict[str, tuple[str, str | None, int]]:
    db_session.rollback()
    rows = db_session.execute(
        text("SELECT sku, status, reason, deliveries FROM job_items WHERE job_id = :id"),
        {"id": uuid.UUID(job_id)},
    )
    return {sku: (status, reason, n) for sku, status, reason, n in rows}


def test_a_photo_that_kills_the_worker_fails_after_bounded_deliveries_and_its_batch_completes(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(item_max_deliveries=3)
    poison = jpeg_bytes(301)
    photos = {"a": jpeg_bytes(300), "poison": poison, "c": jpeg_bytes(302), "d": jpeg_bytes(303)}
    job_id = submit_files(client, auth_headers, [(f"{k}.jpg", v) for k, v in photos.items()])
    ids = pending_ids(db_session, job_id)
    pipeline = CrashOn(settings, poison)
    deliveries = 0
    while True:  # what the broker does after each death: deliver the same batch again
        deliveries += 1
        assert deliveries < 10, "the batch never finished"
        try:
            batch.run_batch(settings, uuid.UUID(job_id), ids, pipeline)
            break
        except WorkerDied:
            continue
    # 1st delivery: the whole batch dies. Then one photo at a time: "a" succeeds and the poison
    # dies twice more; the 4th delivery gives it up and finishes "c" and "d".
    assert deliveries == 4
    assert pipeline.seen[poison] == 3
    assert pipeline.seen[photos["c"]] == 2  # in the first batch, then alone
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["done"], job["failed"], job["pending"]) == ("partial", 3, 1, 0)
    (error,) = job["errors"]["items"]
    assert (error["sku"], error["reason"]) == ("poison", "worker_crashed")
    assert error["error"].startswith("the worker crashed on this photo")
    assert client.get("/api/v1/items/poison").get_json()["status"] == "failed"
    assert client.get("/api/v1/items/d").get_json()["status"] == "ready"


def test_transient_errors_during_a_batch_are_not_counted_as_crashes(
    client, auth_headers, ingest_settings, db_session, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    from shared.config import set_settings

    settings = ingest_settings.replace(item_max_deliveries=2, task_max_retries=5)
    set_settings(settings)
    job_id = submit_files(client, auth_headers, [("t1.jpg", jpeg_bytes(310))])
    ids = pending_ids(db_session, job_id)

    class Flaky(CountingPipeline):
        def process(self, images):
            self.photos += len(images)
            if self.photos <= 3:  # the database "drops" during model work three times
                raise OperationalError("SELECT 1", {}, Exception("connection reset"))
            return self.inner.process(images)

    flaky = Flaky(settings)
    monkeypatch.setattr(batch, "get_pipeline_for", lambda _settings: flaky)
    result = ingest.process_batch.apply(args=[job_id, ids])  # eager: retries run at once
    assert result.get()["succeeded"] == 1
    assert flaky.photos == 4
    assert job_items(db_session, job_id) == {"t1": ("succeeded", None, 1)}


def broker_jobs(broker_redis, queue: str) -> list[tuple[str, str]]:
    """(task name, job id) of each job message waiting in ``queue``."""
    found = []
    for raw in broker_redis.lrange(queue, 0, -1):
        payload = json.loads(raw)
        job = job_of_message(payload)
        if job:
            found.append((payload["headers"]["task"], job))
    return found


def drain(broker_redis) -> int:
    """A worker in miniature: run every job message in the broker in process until none is left."""
    ran = 0
    while True:
        raw = broker_redis.rpop("default") or broker_redis.rpop("ingest")
        if raw is None:
            return ran
        payload = json.loads(raw)
        if job_of_message(payload) is None:
            continue  # cache rebuilds: not this test's business
        import base64

        args = json.loads(base64.b64decode(payload["body"]))[0]
        task = {
            task_names.START_JOB: ingest.start_job,
            task_names.INGEST_BATCH: ingest.process_batch,
        }
        task[payload["headers"]["task"]].apply(args=args).get()
        ran += 1


def backdate(db_session, job_id: str, seconds: int = 3600) -> None:
    db_session.rollback()
    db_session.execute(
        text("UPDATE jobs SET updated_at = now() - make_interval(secs => :s) WHERE id = :id"),
        {"s": seconds, "id": uuid.UUID(job_id)},
    )
    db_session.commit()


def job_row(db_session, job_id: str) -> Job:
    db_session.rollback()
    return db_session.get(Job, uuid.UUID(job_id))


def test_a_job_whose_task_was_lost_is_re_enqueued_by_the_sweeper_and_completes(
    client, auth_headers, ingest_settings, db_session, broker_redis
):
    settings = ingest_settings.replace(stall_after_s=600)
    job_id = submit_files(
        client, auth_headers, [(f"l{i}.jpg", jpeg_bytes(320 + i)) for i in range(5)]
    )
    assert broker_jobs(broker_redis, "default") == [(task_names.START_JOB, job_id)]
    broker_redis.delete("default")  # lost: a broker that lost its data, or a dead sender
    assert sweep_stalled_jobs(settings).as_dict() == {"requeued": [], "failed": [], "waiting": []}

    backdate(db_session, job_id)  # ten minutes without progress, nothing of it in the broker
    report = sweep_stalled_jobs(settings)
    assert report.requeued == [job_id]
    assert broker_jobs(broker_redis, "default") == [(task_names.START_JOB, job_id)]
    assert job_row(db_session, job_id).requeues == 1
    assert sweep_stalled_jobs(settings).requeued == []  # the re-enqueue counts as progress

    assert drain(broker_redis) == 3  # the start task, then two batches (batch size 4)
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 5, 0)
    assert job_row(db_session, job_id).requeues == 0  # progress resets the count


@pytest.mark.parametrize("where", ["queued", "reserved by a worker"])
def test_a_job_whose_task_is_still_in_the_broker_is_left_alone(
    where, client, auth_headers, ingest_settings, db_session, broker_redis
):
    from shared.queueing import make_celery

    job_id = submit_files(client, auth_headers, [("w.jpg", jpeg_bytes(330))])
    broker_redis.delete("default")  # a worker took the start task and ran it:
    ingest.start_job.apply(args=[job_id]).get()  # its batch now waits in the ingest queue
    if where == "reserved by a worker":
        # Taken the way a worker takes it (kombu records it as unacknowledged) and never acked:
        # a long batch in progress, or a retry waiting for its countdown.
        with make_celery(ingest_settings).connection_for_read() as conn:
            message = conn.default_channel.basic_get("ingest", no_ack=False)
            assert message is not None
            assert (broker_redis.llen("ingest"), broker_redis.hlen("unacked")) == (0, 1)
            backdate(db_session, job_id)
            assert sweep_stalled_jobs(ingest_settings).waiting == [job_id]
    else:
        backdate(db_session, job_id)
        assert sweep_stalled_jobs(ingest_settings).waiting == [job_id]
        assert [t for t, _ in broker_jobs(broker_redis, "ingest")] == [task_names.INGEST_BATCH]
    assert job_row(db_session, job_id).requeues == 0
    assert broker_jobs(broker_redis, "default") == []


def test_a_job_that_never_progresses_fails_with_a_clear_reason_after_bounded_requeues(
    client, auth_headers, ingest_settings, db_session, broker_redis
):
    settings = ingest_settings.replace(stall_after_s=60, stall_max_requeues=2)
    job_id = submit_files(client, auth_headers, [("n1.jpg", jpeg_bytes(340)), ("n2.jpg", b"x")])
    for attempt in (1, 2):
        broker_redis.delete("default")  # every task sent for it is lost again
        backdate(db_session, job_id)
        assert sweep_stalled_jobs(settings).requeued == [job_id]
        assert job_row(db_session, job_id).requeues == attempt
    broker_redis.delete("default")
    backdate(db_session, job_id)
    assert sweep_stalled_jobs(settings).failed == [job_id]
    assert broker_jobs(broker_redis, "default") == []
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["failed"], job["pending"]) == ("failed", 2, 0)
    assert "no progress for 60 s after 2 re-enqueues" in job["error"]
    assert {e["reason"] for e in job["errors"]["items"]} == {"stalled"}
    assert sweep_stalled_jobs(settings).as_dict() == {"requeued": [], "failed": [], "waiting": []}


def _advisory_lock_waiters(db_session) -> int:
    # pg_locks is live (pg_stat_activity would be a snapshot of this session's transaction).
    return db_session.scalar(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    )


def test_the_worker_waits_for_the_commit_of_a_job_sent_before_it(
    ingest_settings, db_session, broker_redis
):
    # The web sends a new job's start task before committing it; a fast worker must not find
    # "no such job" and drop it.
    job_id = uuid.uuid4()
    session_cm = session_scope(ingest_settings)
    session = session_cm.__enter__()
    session.add(Job(id=job_id, status="queued", source="url", total=0))
    session.flush()
    session.add(JobItem(job_id=job_id, item_id=None, position=0, sku="early"))
    session.flush()
    lock_for_dispatch(session, job_id)
    outcome: list[int] = []
    worker = threading.Thread(
        target=lambda: outcome.append(ingest.start_job.apply(args=[str(job_id)]).get())
    )
    worker.start()
    # Seen waiting on the dispatch lock in PostgreSQL itself, rather than assumed after a pause.
    wait_until(
        lambda: _advisory_lock_waiters(db_session) == 1,
        60,
        message="the worker waiting on the job's dispatch lock",
    )
    assert worker.is_alive() and outcome == []  # waiting on the web's transaction
    session_cm.__exit__(None, None, None)  # the web commits
    worker.join(timeout=60)
    assert outcome == [1]
    assert [t for t, _ in broker_jobs(broker_redis, "ingest")] == [task_names.INGEST_BATCH]
