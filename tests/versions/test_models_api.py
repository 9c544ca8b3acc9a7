"""The model-version life cycle through the API, with vectors written straight to PostgreSQL
and folds and purges run in this process (the real-worker story is test_life_cycle.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select, text

from shared.models import Embedding, ListChange, NeighbourList
from shared.search import lists_cache
from shared.vectors import encode
from shared.versions import registry
from tests.recommendations.helpers import add_item

A, B = "version-a", "version-b"


def _vectors(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(8).astype(np.float32) for _ in range(n)]


def _add_vector(db_session, item_id: int, version: str, vector: np.ndarray) -> None:
    db_session.add(
        Embedding(item_id=item_id, kind="full", model_version=version, dim=8, vector=encode(vector))
    )
    db_session.commit()


@pytest.fixture
def catalogue(db_session):
    """Five items embedded with A, which serves (as a first batch would have made it)."""
    ids = [add_item(db_session, f"sku-{i}", {"full": v}, A) for i, v in enumerate(_vectors(1, 5))]
    registry.claim_serving_if_none(db_session, A)
    registry.ensure_known(db_session, B)
    db_session.commit()
    return ids


def _fold_all() -> None:
    from workers.tasks.lists import fold_lists

    fold_lists.run(reason="test")


def _brute_force(db_session, version: str, sku: str, k: int) -> list[str]:
    db_session.rollback()
    rows = db_session.execute(
        text(
            "SELECT i.id, i.sku, e.vector FROM items i JOIN embeddings e ON e.item_id = i.id"
            " WHERE e.kind = 'full' AND e.model_version = :v"
        ),
        {"v": version},
    ).all()
    mine = next(np.frombuffer(r.vector, "<f4").astype(np.float64) for r in rows if r.sku == sku)
    others = sorted(
        (
            float(np.sum((np.frombuffer(r.vector, "<f4").astype(np.float64) - mine) ** 2)),
            r.id,
            r.sku,
        )
        for r in rows
        if r.sku != sku
    )
    return [s for _, _, s in others[:k]]


def test_models_lists_versions_with_their_progress(client, auth_headers, catalogue):
    doc = client.get("/api/v1/models").get_json()
    assert doc["serving"] == A
    by_version = {v["version"]: v for v in doc["versions"]}
    assert by_version[A]["state"] == "serving" and by_version[A]["items"] == 5
    assert (by_version[B]["state"], by_version[B]["items"], by_version[B]["catalogue"]) == (
        "registered",
        0,
        5,
    )
    assert by_version[B]["complete"] is False and by_version[B]["workers"] == 0
    assert "settings" not in by_version[A]
    keyed = client.get("/api/v1/models", headers=auth_headers).get_json()
    assert "settings" in keyed["versions"][0]


def test_changing_anything_needs_the_key_and_unknown_versions_are_404(
    client, auth_headers, catalogue
):
    for method, path in (
        ("post", f"/api/v1/models/{B}/build"),
        ("post", f"/api/v1/models/{B}/serve"),
        ("delete", f"/api/v1/models/{B}"),
    ):
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        for name in ("nope", "bad%00name", "x" * 65):
            unknown = getattr(client, method)(path.replace(B, name), headers=auth_headers)
            assert unknown.status_code == 404, (path, name)
            assert unknown.get_json()["code"] == "model_not_found"


def test_serve_is_refused_until_complete_then_switches_and_rolls_back(
    client, auth_headers, db_session, catalogue
):
    assert client.post(f"/api/v1/models/{B}/build", headers=auth_headers).status_code == 202
    again = client.post(f"/api/v1/models/{B}/build", headers=auth_headers)
    assert again.status_code == 202 and again.get_json()["state"] == "building"
    # One catch-up waits for B's workers (the second build found it asked for already).
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'visrec_queue_depth{{queue="ingest.{B}"}} 1.0' in metrics
    for item_id, vector in zip(catalogue[:4], _vectors(2, 4), strict=True):
        _add_vector(db_session, item_id, B, vector)
    refused = client.post(f"/api/v1/models/{B}/serve", headers=auth_headers)
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["code"] == "model_not_ready" and body["details"]["items"] == 4
    _add_vector(db_session, catalogue[4], B, _vectors(3, 1)[0])
    # Every item has B's vectors, but B's lists do not hold them yet.
    assert client.post(f"/api/v1/models/{B}/serve", headers=auth_headers).status_code == 409
    _fold_all()
    served = client.post(f"/api/v1/models/{B}/serve", headers=auth_headers)
    assert served.status_code == 200 and served.get_json() == {"serving": B}
    page = client.get("/api/v1/items/sku-0/recommendations?k=3&kinds=full").get_json()
    assert page["model_version"] == B
    assert [h["sku"] for h in page["results"]["full"]] == _brute_force(db_session, B, "sku-0", 3)
    # A was kept: rolling back is the same call.
    assert client.post(f"/api/v1/models/{A}/serve", headers=auth_headers).status_code == 200
    page = client.get("/api/v1/items/sku-0/recommendations?k=3&kinds=full").get_json()
    assert page["model_version"] == A
    assert [h["sku"] for h in page["results"]["full"]] == _brute_force(db_session, A, "sku-0", 3)


def test_an_item_without_the_serving_versions_vectors_is_not_embedded_for_pages(
    client, auth_headers, db_session, catalogue
):
    only_b = add_item(db_session, "only-b", {"full": _vectors(4, 1)[0]}, B)
    assert only_b
    response = client.get("/api/v1/items/only-b/recommendations?kinds=full")
    assert response.status_code == 409
    assert response.get_json()["code"] == "item_not_embedded"


def test_retire_refuses_the_serving_version_and_purges_the_other(
    client, auth_headers, db_session, cache_redis, settings, catalogue
):
    from workers.versions.purge import purge

    for item_id, vector in zip(catalogue, _vectors(5, 5), strict=True):
        _add_vector(db_session, item_id, B, vector)
    _fold_all()
    assert cache_redis.keys(f"{lists_cache.PREFIX}gen:*:l:{B}:*")
    refused = client.delete(f"/api/v1/models/{A}", headers=auth_headers)
    assert refused.status_code == 409 and refused.get_json()["code"] == "model_serving"
    retired = client.delete(f"/api/v1/models/{B}", headers=auth_headers)
    assert retired.status_code == 202 and retired.get_json()["state"] == "retired"
    assert client.post(f"/api/v1/models/{B}/serve", headers=auth_headers).status_code == 409
    assert client.post(f"/api/v1/models/{B}/build", headers=auth_headers).status_code == 409
    purge(settings, B)
    db_session.rollback()
    for model in (Embedding, NeighbourList, ListChange):
        left = db_session.scalar(
            select(func.count()).select_from(model).where(model.model_version == B)
        )
        assert left == 0, model.__name__
    assert not cache_redis.keys(f"{lists_cache.PREFIX}gen:*:l:{B}:*")
    assert cache_redis.keys(f"{lists_cache.PREFIX}gen:*:l:{A}:*")
    doc = client.get("/api/v1/models").get_json()
    assert {v["version"]: v["purged"] for v in doc["versions"]}[B] is True


def test_the_catalogue_page_shows_the_serving_version_and_a_build_in_progress(
    client, auth_headers, db_session, catalogue
):
    assert client.post(f"/api/v1/models/{B}/build", headers=auth_headers).status_code == 202
    _add_vector(db_session, catalogue[0], B, _vectors(6, 1)[0])
    page = " ".join(client.get("/").get_data(as_text=True).split())
    assert f"Model version <code>{A}</code> serves." in page
    assert f"Building <code>{B}</code>: 1 of 5 products embedded, 1 changes to fold." in page


def test_item_searches_go_to_a_versions_query_workers_not_to_its_other_workers(
    app, settings, broker_redis, client, catalogue
):
    """A version with only a lists (or ingest) worker alive has nobody on ``query.<v>``: its
    item searches go to any query worker; the API still counts every live worker."""
    from shared.queueing import QUEUE_INGEST, QUEUE_LISTS, QUEUE_QUERY
    from shared.versions import presence
    from web.services.recommendations import _item_search_version

    presence.beat(settings, B, "lists@host", [QUEUE_LISTS])
    presence.beat(settings, B, "worker@host", [QUEUE_INGEST])
    with app.app_context():
        assert _item_search_version(B) is None
    presence.beat(settings, B, "query@host", [QUEUE_QUERY])
    with app.app_context():
        assert _item_search_version(B) == B
    workers = {v["version"]: v["workers"] for v in client.get("/api/v1/models").json["versions"]}
    assert workers[B] == 3
    presence.leave(settings, B, "query@host")
    with app.app_context():
        assert _item_search_version(B) is None
    presence.forget(settings, B)
    assert not broker_redis.keys(f"{presence.WORKERS_KEY}*{B}")
