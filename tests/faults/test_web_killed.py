"""The web process killed while it creates a job: no job is left queued forever."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import func, select

from shared import task_names
from shared.config import settings_to_env
from shared.models import Item, Job
from tests.ingestion.test_recovery import broker_jobs, drain
from tests.support.images import jpeg_bytes
from tests.support.worker import ROOT
from workers.tasks import ingest


def post_job_to(port: int, key: str) -> None:
    """POST one JSON job; the server dies before it answers."""
    body = json.dumps({"items": [{"sku": "dies", "path": "dies.jpg"}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            "/api/v1/jobs",
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            conn.getresponse()
    finally:
        conn.close()


@pytest.mark.parametrize("point", ["after-send", "after-commit"])
def test_a_web_process_killed_while_creating_a_job_leaves_no_job_stuck(
    point, ingest_settings, auth_headers, db_session, broker_redis, cache_redis, clean_db
):
    assert ingest_settings.import_root is not None
    (ingest_settings.import_root / "dies.jpg").write_bytes(jpeg_bytes(510))
    web = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.dying_web", point],
        cwd=ROOT,
        env={**os.environ, **settings_to_env(ingest_settings), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert web.stdout is not None
        port = int(web.stdout.readline())  # blocks until it serves (or fails on exit)
        post_job_to(port, auth_headers["Authorization"].split()[1])
        assert web.wait(timeout=30) == -9  # SIGKILL, at the chosen point
    finally:
        if web.poll() is None:
            web.kill()
    (sent,) = broker_jobs(broker_redis, "default")
    assert sent[0] == task_names.START_JOB
    db_session.rollback()
    jobs = db_session.scalars(select(Job)).all()
    if point == "after-send":
        # Killed before the commit: no job, no item; the task it sent finds nothing to do.
        assert jobs == [] and db_session.scalar(select(func.count()).select_from(Item)) == 0
        assert ingest.start_job.apply(args=[sent[1]]).get() == 0
        db_session.rollback()
        assert db_session.get(Job, uuid.UUID(sent[1])) is None
    else:
        # Killed after the commit, before answering: the job's task was already queued.
        assert [(str(j.id), j.status) for j in jobs] == [(sent[1], "queued")]
        assert drain(broker_redis) == 2  # the start task, then the one batch
        db_session.rollback()
        job = db_session.get(Job, uuid.UUID(sent[1]))
        assert (job.status, job.done) == ("succeeded", 1)
