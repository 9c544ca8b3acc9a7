import logging

from web import create_app


def test_healthz_is_alive(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok"}


def test_readyz_reports_every_dependency(client):
    r = client.get("/readyz")
    body = r.get_json()
    assert set(body["checks"]) == {"database", "broker", "cache", "model_bundle"}
    for name in ("database", "broker", "cache"):
        assert body["checks"][name]["ok"] is True, body


def test_readyz_names_what_is_down_with_503(settings, clean_db, caplog):
    # Nothing listens on port 1: the broker is "down" while the database is up.
    app = create_app(settings.replace(redis_broker_url="redis://127.0.0.1:1/0"))
    with caplog.at_level(logging.WARNING, logger="web.health"):
        r = app.test_client().get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == {"ok": False, "error": "the broker is unreachable"}
    assert body["checks"]["database"]["ok"] is True
    # The driver's words (host, port, errno) are for the operator's log, not the response.
    assert "127.0.0.1" not in r.get_data(as_text=True)
    logged = [record.exc_text or "" for record in caplog.records]
    assert any("127.0.0.1:1" in text for text in logged), logged


def test_unknown_route_and_wrong_method_answer_json(client):
    r = client.get("/no/such/thing")
    assert r.status_code == 404
    assert r.is_json and r.get_json()["code"] == "not_found"
    r = client.post("/healthz")
    assert r.status_code == 405
    assert r.get_json()["code"] == "method_not_allowed"
    assert "GET" in r.headers.get("Allow", "")


def test_openapi_document_is_served(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["info"]["title"]
    assert "/healthz" in doc["paths"]


def test_readyz_says_when_vectors_are_whole_photo_only(client):
    bundle = client.get("/readyz").get_json()["checks"]["model_bundle"]
    assert bundle["ok"] is True
    assert bundle["detector"] is False
    assert bundle["mode"] == "full_only"


def test_readyz_is_503_when_the_model_bundle_is_broken(settings, clean_db, tmp_path):
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    app = create_app(settings.replace(model_dir=broken, embedder_weights=None))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    bundle = r.get_json()["checks"]["model_bundle"]
    assert bundle == {"ok": False, "error": "the model bundle cannot be loaded"}
    assert str(tmp_path) not in r.get_data(as_text=True)


def test_readyz_shows_no_server_paths(settings, clean_db, tmp_path):
    weights = tmp_path / "secret-place" / "embedder.weights.h5"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")
    app = create_app(settings.replace(embedder_weights=str(weights)))
    text = app.test_client().get("/readyz").get_data(as_text=True)
    assert "secret-place" not in text
    assert str(tmp_path) not in text
