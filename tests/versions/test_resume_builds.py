"""A build whose catch-up was lost resumes by itself (workers.versions.passes).

Beat's check (``workers.tasks.versions.resume_builds``) starts a new pass for a building
version that lacks ready items and has a live worker, and only when no pass holds the lease and
none is queued; a chunk of a pass that a newer one superseded stops there. The tasks are the
real ones: run in this process (``apply``) where the test steps between chunks, then in a real
worker of the version, which finishes the build.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import set_settings
from shared.db import session_scope
from shared.media import MediaStore
from shared.ml.bundle import load_bundle
from shared.queueing import QUEUE_INGEST
from shared.versions import presence, registry
from shared.versions.routing import versioned
from tests.recommendations.helpers import add_item
from tests.support.images import jpeg_bytes
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess
from workers.tasks.versions import catch_up, resume_builds
from workers.versions.passes import PASS_KEY, pass_running, start_pass

A = "version-a"
ITEMS = 6  # two chunks of INGEST_BATCH_SIZE 4


@pytest.fixture
def lost_build(version_settings, db_session):
    """A catalogue on A, each item's photo stored; B tracked (its build asked for) but no
    catch-up of it anywhere: the message was lost before any worker took it."""
    settings_b = version_settings.replace(embedder_input_size=96)
    b = load_bundle(settings_b).model_version
    media = MediaStore(settings_b.media_root)
    rng = np.random.default_rng(0)
    ids = [
        add_item(
            db_session,
            f"p{i}",
            {"full": rng.standard_normal(8).astype(np.float32)},
            A,
            media_key=media.put_bytes(jpeg_bytes(i)).key,
        )
        for i in range(ITEMS)
    ]
    registry.claim_serving_if_none(db_session, A)
    registry.ensure_known(db_session, b)
    assert registry.track(db_session, b)
    db_session.commit()
    set_settings(settings_b)  # the in-process tasks run as B's worker would
    return settings_b, b, ids


def _lacking(settings) -> list[str]:
    with session_scope(settings) as session:
        return registry.lacking_versions(session)


def _resumed(settings, version: str) -> list[str]:
    """Beat's check, with a worker of ``version`` live (as its heartbeat thread keeps it)."""
    presence.beat(settings, version, "worker-b@test", [QUEUE_INGEST])
    answer: dict[str, list[str]] = resume_builds.apply().get()
    return answer["resumed"]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_lost_build_is_resumed_once_per_loss_and_completes(lost_build, broker_redis, tmp_path):
    settings_b, b, _ = lost_build
    queue = versioned(QUEUE_INGEST, b)
    # Nobody would read B's queue: nothing is sent until a worker of B is live.
    assert resume_builds.apply().get() == {"lacking": [b], "resumed": []}
    assert broker_redis.llen(queue) == 0

    assert _resumed(settings_b, b) == [b]
    # Its start waits in the queue: asking on every beat adds nothing.
    assert _resumed(settings_b, b) == []
    assert broker_redis.llen(queue) == 1

    # The broker is flushed: the start and every flag go; the next check sends it again.
    broker_redis.flushdb()
    assert _resumed(settings_b, b) == [b]
    assert broker_redis.llen(queue) == 1

    # A worker takes the start and does the first chunk; the pass holds its lease.
    broker_redis.delete(queue)
    first = catch_up.apply(kwargs={"version": b, "after_id": 0}).get()
    assert (first["embedded"], first["more"]) == (4, True)
    assert broker_redis.llen(queue) == 1  # the second chunk
    assert _resumed(settings_b, b) == []
    # The worker dies with the second chunk: the message is gone and, once the lease runs out
    # (made to run out now), the check starts a new pass.
    broker_redis.delete(queue)
    assert _resumed(settings_b, b) == []
    broker_redis.pexpire(PASS_KEY + b, 1)
    wait_until(lambda: not pass_running(settings_b, b), 60, message="lease lapsed")
    assert _resumed(settings_b, b) == [b]
    assert broker_redis.llen(queue) == 1

    worker = WorkerProcess(settings_b, tmp_path / "worker-b.log")
    worker.start(wait_s=300)
    try:
        wait_until(lambda: not _lacking(settings_b), 120, interval=0.2, message="B built")
        wait_until(lambda: broker_redis.llen(queue) == 0, 30, message="B's queue drained")
        assert not pass_running(settings_b, b), "the pass ended and gave its lease back"
        assert resume_builds.apply().get() == {"lacking": [], "resumed": []}
    finally:
        worker.stop()


def test_a_chunk_of_a_superseded_pass_stops_there(lost_build, broker_redis):
    settings_b, b, ids = lost_build
    queue = versioned(QUEUE_INGEST, b)
    old = start_pass(settings_b, b)
    new = start_pass(settings_b, b)  # a build asked again, a batch's keep-in-step, a resume
    stale = catch_up.apply(kwargs={"version": b, "after_id": ids[0], "pass_token": old}).get()
    assert stale.get("superseded") is True
    assert broker_redis.llen(queue) == 0
    with session_scope(settings_b) as session:
        assert next(r for r in registry.rows(session) if r.version == b).items == 0

    going_on = catch_up.apply(kwargs={"version": b, "after_id": ids[0], "pass_token": new}).get()
    assert (going_on["embedded"], going_on["more"]) == (4, True)
    assert broker_redis.llen(queue) == 1
    last = catch_up.apply(
        kwargs={"version": b, "after_id": going_on["last_id"], "pass_token": new}
    ).get()
    assert (last["embedded"], last["more"]) == (1, False)
    assert not pass_running(settings_b, b), "a pass that walked to the end gives its lease back"
