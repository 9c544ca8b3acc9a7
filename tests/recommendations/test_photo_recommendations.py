"""POST /api/v1/recommendations: a photo embedded and searched by a real worker, exactly."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from shared import task_names
from shared.media import MediaStore
from shared.queueing import QUEUE_QUERY, make_celery
from tests.recommendations.helpers import add_catalogue, add_item, brute_force, stored_vectors
from tests.support.images import jpeg_bytes
from tests.support.worker import WorkerProcess


def _photo(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(96, 80, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_not_an_image_is_422_with_a_reason(client, db_session, fold) -> None:
    add_item(db_session, "a", {"full": np.zeros(4, np.float32)})
    fold()
    response = client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(b"certainly not a photo"), "x.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert response.json["code"] == "image_rejected"
    assert response.json["details"]["reason"] == "undecodable"
    missing = client.post("/api/v1/recommendations", data={}, content_type="multipart/form-data")
    assert missing.status_code == 422 and missing.json["code"] == "image_required"
    bad_k = client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(_photo()), "p.png"), "k": "0"},
        content_type="multipart/form-data",
    )
    assert bad_k.status_code == 422 and bad_k.json["code"] == "validation_error"


def test_no_worker_answers_503_with_retry_after(app, client, db_session, fold) -> None:
    add_item(db_session, "a", {"full": np.zeros(4, np.float32)})
    fold()
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(query_timeout_s=0.5)
    response = client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(_photo()), "p.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 503
    assert response.json["code"] == "query_timeout"
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_uploaded_photo_is_answered_exactly_by_a_real_worker(
    settings, app, client, db_session, fold, worker_log
) -> None:
    settings = settings.replace(model_dir=None, embedder_weights="random", embedder_input_size=64)
    app.config["SETTINGS"] = settings
    photo = _photo(1)

    def stored() -> set:
        return {p for p in settings.media_root.rglob("*") if p.is_file()}

    before = stored()
    worker = WorkerProcess(settings, worker_log, queues=(QUEUE_QUERY,))
    worker.start()
    try:
        # The worker's own vector for this photo, through the task the endpoint uses.
        answer = (
            make_celery(settings)
            .send_task(
                task_names.SEARCH_PHOTO,
                kwargs={
                    "image": base64.b64encode(photo).decode("ascii"),
                    "kinds": ["full"],
                    "k": 5,
                },
                queue=QUEUE_QUERY,
            )
            .get(timeout=300)
        )
        assert answer["results"] == {"full": []}  # nothing in the catalogue yet
        version = answer["model_version"]
        query = np.frombuffer(base64.b64decode(answer["vectors"]["full"]), dtype="<f4")
        rng = np.random.default_rng(2)
        noise = rng.standard_normal((40, query.size)).astype(np.float32)
        catalogue = {
            f"c{i:02d}": {"full": (query + noise[i] * (0.05 * (i % 7))).astype(np.float32)}
            for i in range(40)
        }
        catalogue["twin"] = {"full": query.copy()}
        add_catalogue(db_session, catalogue, version=version)
        # No fold needed: the worker searches its matrices, brought up to PostgreSQL first.
        response = client.post(
            "/api/v1/recommendations",
            data={"image": (io.BytesIO(photo), "p.png"), "k": "5", "kinds": "full,top"},
            content_type="multipart/form-data",
        )
    finally:
        worker.stop()
    assert response.status_code == 200, response.json
    body = response.json
    assert body["model_version"] == version
    want = brute_force(stored_vectors(db_session, "full", version), query, 5)
    assert [h["sku"] for h in body["results"]["full"]] == [s for s, _ in want]
    assert body["results"]["full"][0]["distance"] == 0.0
    assert [h["distance"] for h in body["results"]["full"]] == pytest.approx(
        [d for _, d in want], rel=1e-9
    )
    # No detector in this bundle: no top crop, said plainly.
    assert body["results"]["top"] == [] and "top garment" in body["missing"]["top"]
    assert body["query"]["width"] == 80 and body["query"]["height"] == 96
    # The shopper's photo was searched, not kept: nothing entered the media store.
    assert stored() == before


@pytest.fixture(scope="module")
def test_bundle(tmp_path_factory):
    from tests.support.bundles import make_test_bundle

    return make_test_bundle(
        tmp_path_factory.mktemp("bundle"), detector=True, input_size=64, test_size=128, seed=0
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_top_and_bottom_hits_of_a_photo_carry_the_matched_items_crops(
    settings, app, client, db_session, worker_log, test_bundle
) -> None:
    from training.synthetic import make_catalogue_sample

    # Threshold 0: the random detector's best boxes are the photo's top and bottom. The web's
    # wait for the query worker is a deadline, not a test of speed: a loaded machine is slow.
    settings = settings.replace(
        model_dir=test_bundle.root,
        embedder_weights=None,
        score_threshold=0.0,
        device="cpu",
        query_timeout_s=120.0,
    )
    app.config["SETTINGS"] = settings
    image, _ = make_catalogue_sample(seed=3, index=1, size=192)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    photo = out.getvalue()
    store = MediaStore(settings.media_root)
    crops = {
        kind: store.put_bytes(jpeg_bytes(seed, (24, 32))).key
        for seed, kind in enumerate(("top", "bottom"))
    }
    worker = WorkerProcess(settings, worker_log, queues=(QUEUE_QUERY,))
    worker.start()
    try:
        warm = (
            make_celery(settings)
            .send_task(
                task_names.SEARCH_PHOTO,
                kwargs={"image": base64.b64encode(photo).decode("ascii"), "kinds": [], "k": 1},
                queue=QUEUE_QUERY,
            )
            .get(timeout=300)
        )
        assert warm["kinds"] == ["bottom", "full", "top"]
        version = warm["model_version"]
        rng = np.random.default_rng(5)
        add_item(
            db_session,
            "with-crops",
            {
                kind: rng.standard_normal(2048).astype(np.float32)
                for kind in ("top", "bottom", "full")
            },
            version=version,
            crop_keys=crops,
        )
        add_item(
            db_session,
            "no-crop-yet",
            {"top": rng.standard_normal(2048).astype(np.float32)},
            version=version,
        )
        response = client.post(
            "/api/v1/recommendations",
            data={"image": (io.BytesIO(photo), "look.jpg"), "k": "5"},
            content_type="multipart/form-data",
        )
    finally:
        worker.stop()
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert {h["sku"]: h["crop_url"] for h in results["top"]} == {
        "with-crops": f"/media/{crops['top']}",
        "no-crop-yet": None,
    }
    assert results["bottom"] == [
        {**results["bottom"][0], "sku": "with-crops", "crop_url": f"/media/{crops['bottom']}"}
    ]
    assert [sorted(h) for h in results["full"]] == [["distance", "image_url", "sku"]]
    served = client.get(results["top"][0]["crop_url"] or results["top"][1]["crop_url"])
    assert served.status_code == 200 and served.mimetype == "image/jpeg"


def _search(client, headers=None, data: bytes = b"not a photo"):
    return client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(data), "p.jpg")},
        headers=headers or {},
        content_type="multipart/form-data",
    )


def test_anonymous_photo_searches_are_rate_limited_per_client(app, client, auth_headers):
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(photo_search_rate_limit="3/minute")
    assert [_search(client).status_code for _ in range(3)] == [422, 422, 422]
    refused = _search(client)
    assert refused.status_code == 429
    assert refused.json["code"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) > 0
    # Another client address has its own budget; a key holder is not counted at all.
    other = client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(b"x"), "p.jpg")},
        content_type="multipart/form-data",
        environ_base={"REMOTE_ADDR": "10.9.8.7"},
    )
    assert other.status_code == 422
    assert all(_search(client, auth_headers).status_code == 422 for _ in range(5))


def test_a_flushed_cache_does_not_reset_the_photo_search_limit(app, client, cache_redis):
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(photo_search_rate_limit="2/minute")
    assert [_search(client).status_code for _ in range(2)] == [422, 422]
    cache_redis.flushdb()  # what an eviction or an operator's FLUSHDB does to the cache
    assert _search(client).status_code == 429


def test_photo_search_can_require_a_key(app, client, auth_headers):
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(photo_search_requires_key=True)
    refused = _search(client)
    assert refused.status_code == 401 and refused.json["code"] == "unauthorized"
    assert _search(client, auth_headers).status_code == 422  # let in; the photo is the problem


def test_an_oversized_photo_is_refused_while_streaming(app, client):
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(max_upload_bytes=10_000)
    response = _search(client, data=b"\xff" * 200_000)
    assert response.status_code == 413
    assert response.json["code"] == "payload_too_large"
