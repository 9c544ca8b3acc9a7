"""The model-version life cycle with real workers of two versions: the same code, started with
different version-changing settings (EMBEDDER_INPUT_SIZE 64 and 96).

Catalogue on A; B's worker starts; B builds from the stored photos while A answers every
product page exactly; items ingested and deleted during the build are right in both; switch to
B: every answer equals brute force over B's vectors and photo search answers from B; roll back
to A: exact over A; retire A: nothing of A remains in PostgreSQL, Redis or worker memory.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import text

from shared.ml.bundle import load_bundle
from shared.queueing import make_celery
from shared.search import lists_cache
from tests.ingestion.helpers import wait_for_job
from tests.support.images import jpeg_bytes
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

K = 4


def _post(client, auth_headers, seeds: dict[str, int]) -> dict:
    files = {
        "images": [(io.BytesIO(jpeg_bytes(seed)), f"{sku}.jpg") for sku, seed in seeds.items()]
    }
    response = client.post(
        "/api/v1/jobs", data=files, headers=auth_headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.get_json()
    return wait_for_job(client, response.get_json()["id"])


def _vectors(db_session, version: str) -> dict[str, tuple[int, np.ndarray]]:
    db_session.rollback()
    rows = db_session.execute(
        text(
            "SELECT i.id, i.sku, e.vector FROM items i JOIN embeddings e ON e.item_id = i.id"
            " WHERE e.kind = 'full' AND e.model_version = :v AND i.status = 'ready'"
        ),
        {"v": version},
    ).all()
    return {r.sku: (r.id, np.frombuffer(r.vector, "<f4").astype(np.float64)) for r in rows}


def _brute_force(vectors: dict[str, tuple[int, np.ndarray]], sku: str) -> list[str]:
    mine = vectors[sku][1]
    ranked = sorted(
        (float(np.sum((v - mine) ** 2)), i, s) for s, (i, v) in vectors.items() if s != sku
    )
    return [s for _, _, s in ranked[:K]]


def _assert_exact(client, db_session, version: str) -> None:
    vectors = _vectors(db_session, version)
    for sku in sorted(vectors):
        response = client.get(f"/api/v1/items/{sku}/recommendations?k={K}&kinds=full")
        assert response.status_code == 200, (sku, response.get_json())
        body = response.get_json()
        assert body["model_version"] == version, sku
        assert [h["sku"] for h in body["results"]["full"]] == _brute_force(vectors, sku), sku


def _version(client, version: str) -> dict:
    docs = client.get("/api/v1/models").get_json()["versions"]
    return next(d for d in docs if d["version"] == version)


def _wait_complete(client, version: str, timeout_s: float = 300.0) -> dict:
    return wait_until(
        lambda: (doc := _version(client, version))["complete"] and doc,
        timeout_s,
        interval=0.5,
        message=lambda: f"{version} complete: {_version(client, version)}",
    )


def _photo_search(client, seed: int) -> dict:
    response = client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(jpeg_bytes(seed)), "p.jpg"), "k": str(K), "kinds": "full"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _held(settings) -> list[dict[str, int]]:
    """Each worker's ``{"<version>/<kind>": rows}`` (the test's workers share a node name)."""
    replies = make_celery(settings).control.broadcast("held_versions", reply=True, timeout=5.0)
    return [answer["ok"] for reply in replies for answer in reply.values()]


def test_build_switch_roll_back_and_retire_with_workers_of_two_versions(
    make_app, version_settings, auth_headers, db_session, cache_redis, worker_log, tmp_path
):
    settings_a = version_settings
    settings_b = settings_a.replace(embedder_input_size=96)
    a, b = load_bundle(settings_a).model_version, load_bundle(settings_b).model_version
    assert a != b
    client = make_app(settings_a).test_client()
    workers = [WorkerProcess(settings_a, worker_log)]
    workers[0].start(wait_s=300)
    try:
        assert _post(client, auth_headers, {f"p{i:02d}": i for i in range(10)})["done"] == 10
        _wait_complete(client, a)
        assert client.get("/api/v1/models").get_json()["serving"] == a
        _assert_exact(client, db_session, a)

        workers.append(WorkerProcess(settings_b, tmp_path / "worker-b.log"))
        workers[1].start(wait_s=300)
        wait_until(lambda: _version(client, b)["workers"] == 1, 30, message="B's worker live")
        assert _version(client, b)["state"] == "registered"
        built = client.post(f"/api/v1/models/{b}/build", headers=auth_headers)
        assert built.status_code == 202 and built.get_json()["state"] in ("building", "complete")
        # While B builds, A answers every page exactly; the catalogue changes meanwhile.
        _assert_exact(client, db_session, a)
        assert _post(client, auth_headers, {"new-1": 101, "new-2": 102})["done"] == 2
        assert client.delete("/api/v1/items/p03", headers=auth_headers).status_code == 204
        _wait_complete(client, b)
        _wait_complete(client, a)
        vectors_a, vectors_b = _vectors(db_session, a), _vectors(db_session, b)
        assert (
            set(vectors_a)
            == set(vectors_b)
            == {f"p{i:02d}" for i in range(10)} - {"p03"} | {"new-1", "new-2"}
        )
        _assert_exact(client, db_session, a)

        served = client.post(f"/api/v1/models/{b}/serve", headers=auth_headers)
        assert served.status_code == 200 and served.get_json() == {"serving": b}
        _assert_exact(client, db_session, b)
        answer = wait_until(
            lambda: (found := _photo_search(client, 5))["model_version"] == b and found,
            10,
            interval=0.2,
            message="photo search answered by B",
        )
        # Embedded with B's bundle: the catalogue's own photo finds itself first (not at
        # exactly 0: the catch-up embedded it in a batch of four, the search alone).
        hits = answer["results"]["full"]
        assert hits[0]["sku"] == "p05" and hits[0]["distance"] < 1e-3 < hits[1]["distance"]

        assert client.post(f"/api/v1/models/{a}/serve", headers=auth_headers).status_code == 200
        _assert_exact(client, db_session, a)
        refused = client.delete(f"/api/v1/models/{a}", headers=auth_headers)
        assert refused.status_code == 409 and refused.get_json()["code"] == "model_serving"

        assert client.post(f"/api/v1/models/{b}/serve", headers=auth_headers).status_code == 200
        assert client.delete(f"/api/v1/models/{a}", headers=auth_headers).status_code == 202
        wait_until(lambda: _version(client, a)["purged"], 120, message="A purged")
        db_session.rollback()
        for table in ("embeddings", "neighbour_lists", "list_changes"):
            left = db_session.execute(
                text(f"SELECT count(*) FROM {table} WHERE model_version = :v"),  # noqa: S608
                {"v": a},
            ).scalar_one()
            assert left == 0, table
        assert not cache_redis.keys(f"{lists_cache.PREFIX}gen:*:l:{a}:*")
        assert cache_redis.keys(f"{lists_cache.PREFIX}gen:*:l:{b}:*")
        held = wait_until(
            lambda: (found := _held(settings_a)) and len(found) == 2 and found,
            30,
            message="both workers answer",
        )
        for matrices in held:
            assert not any(name.startswith(f"{a}/") for name in matrices), matrices
        assert any(name.startswith(f"{b}/") for matrices in held for name in matrices), held
        _assert_exact(client, db_session, b)
    finally:
        for worker in workers:
            worker.stop()
