"""GET /api/v1/items/<sku>/recommendations: exact answers, kept exact as the catalogue moves."""

from __future__ import annotations

import io

import numpy as np
import psycopg
import pytest
from PIL import Image
from sqlalchemy import select, update

from shared.media import MediaStore
from shared.models import Embedding, Item
from shared.search import lists_cache
from shared.vectors import decode, encode
from shared.vocabulary import DISPLAY_ORDER as KINDS
from tests.recommendations.helpers import (
    VERSION,
    add_catalogue,
    add_item,
    brute_force,
    delete_item,
    stored_vectors,
    tie_heavy_vectors,
)
from tests.support.images import jpeg_bytes


def _catalogue(rng: np.random.Generator, n: int, dim: int) -> dict[str, dict[str, np.ndarray]]:
    """Every item has a full vector; some lack a top or a bottom; many duplicates and ties."""
    full = tie_heavy_vectors(rng, n, dim)
    top = tie_heavy_vectors(rng, n, dim)
    bottom = rng.standard_normal((n, dim)).astype(np.float32)
    bottom[5] = bottom[6]  # exact duplicate among gaussian vectors
    out = {}
    for i in range(n):
        kinds = {"full": full[i]}
        if i % 5 != 0:
            kinds["top"] = top[i]
        if i % 3 != 0:
            kinds["bottom"] = bottom[i]
        out[f"sku-{i:03d}"] = kinds
    return out


def _expected(db_session, sku: str, kind: str, k: int) -> list[tuple[str, float]]:
    rows = stored_vectors(db_session, kind)
    mine = [r for r in rows if r[1] == sku]
    assert mine, f"{sku} has no {kind}"
    return brute_force(rows, mine[0][2], k, exclude_item_id=mine[0][0])


def _assert_exact(body: dict, db_session, sku: str, kinds, k: int) -> None:
    for kind in kinds:
        want = _expected(db_session, sku, kind, k)
        got = body["results"][kind]
        assert [h["sku"] for h in got] == [s for s, _ in want], kind
        assert [h["distance"] for h in got] == pytest.approx([d for _, d in want], rel=1e-9)


def test_results_equal_brute_force_for_every_kind(client, db_session, fold) -> None:
    rng = np.random.default_rng(1)
    add_catalogue(db_session, _catalogue(rng, 60, 6))
    fold()
    for sku in ("sku-001", "sku-007", "sku-058"):
        for k in (1, 4, 10, 100):
            response = client.get(f"/api/v1/items/{sku}/recommendations?k={k}")
            assert response.status_code == 200, response.json
            body = response.json
            assert body["sku"] == sku and body["model_version"] == VERSION
            assert sku not in [h["sku"] for kind in KINDS for h in body["results"][kind]]
            _assert_exact(body, db_session, sku, KINDS, k)
            assert body["missing"] == {}


def test_a_kind_the_item_lacks_is_an_empty_list_with_a_reason(client, db_session, fold):
    add_catalogue(db_session, _catalogue(np.random.default_rng(2), 20, 4))
    fold()
    body = client.get("/api/v1/items/sku-015/recommendations?kinds=top,bottom,full").json
    assert body["results"]["top"] == [] and body["results"]["bottom"] == []
    assert body["missing"]["bottom"] == "no bottom garment was detected in this item's photo"
    assert "top garment" in body["missing"]["top"]
    assert len(body["results"]["full"]) == 10
    only = client.get("/api/v1/items/sku-001/recommendations?kinds=bottom&k=3").json
    assert list(only["results"]) == ["bottom"] and len(only["results"]["bottom"]) == 3


def test_image_urls_point_at_the_media_route(app, client, db_session, fold):
    key = "ab" * 32
    add_item(db_session, "a", {"full": np.zeros(4, np.float32)})
    add_item(db_session, "b", {"full": np.ones(4, np.float32)}, media_key=key)
    fold()
    hit = client.get("/api/v1/items/a/recommendations?kinds=full").json["results"]["full"][0]
    assert hit == {"sku": "b", "distance": 2.0, "image_url": f"/media/{key}"}
    app.config["SETTINGS"] = app.config["SETTINGS"].replace(public_base_url="https://shop.example/")
    hit = client.get("/api/v1/items/a/recommendations?kinds=full").json["results"]["full"][0]
    assert hit["image_url"] == f"https://shop.example/media/{key}"


@pytest.mark.parametrize("query", ["k=0", "k=101", "k=abc", "kinds=top,shoes", "k=-3"])
def test_bad_parameters_are_422(client, db_session, fold, query: str) -> None:
    add_item(db_session, "a", {"full": np.zeros(4, np.float32)})
    fold()
    response = client.get(f"/api/v1/items/a/recommendations?{query}")
    assert response.status_code == 422
    assert response.json["code"] == "validation_error"


def test_unknown_sku_is_404_and_unembedded_item_is_409(client, db_session, fold) -> None:
    from shared.models import Item

    add_item(db_session, "a", {"full": np.zeros(4, np.float32)})
    db_session.add(Item(sku="pending-one", status="pending"))
    db_session.commit()
    fold()
    missing = client.get("/api/v1/items/nope/recommendations")
    assert missing.status_code == 404 and missing.json["code"] == "item_not_found"
    pending = client.get("/api/v1/items/pending-one/recommendations")
    assert pending.status_code == 409 and pending.json["code"] == "item_not_embedded"


def test_new_items_are_recommended_before_and_after_the_fold(
    client, db_session, fold, wait_for_generation
) -> None:
    rng = np.random.default_rng(3)
    add_catalogue(db_session, _catalogue(rng, 30, 4))
    fold()
    url = "/api/v1/items/sku-001/recommendations?k=5"
    top_of_1 = decode(next(v for _, s, v in stored_vectors(db_session, "top") if s == "sku-001"))
    # A twin of sku-001's top lands: it comes first at once, before any fold.
    add_item(db_session, "twin", {"top": top_of_1.copy(), "full": np.full(4, 9, np.float32)})
    body = client.get(url).json
    assert body["results"]["top"][0] == {
        "sku": "twin",
        "distance": 0.0,
        "image_url": body["results"]["top"][0]["image_url"],
        "crop_url": None,
    }
    _assert_exact(body, db_session, "sku-001", KINDS, 5)
    report = fold()
    assert report["changes"] == 2 and report["cache"] == "applied"
    body = client.get(url).json
    assert body["results"]["top"][0]["sku"] == "twin"
    _assert_exact(body, db_session, "sku-001", KINDS, 5)
    # The new item's own lists now exist: answered by a lookup too.
    new_item = client.get("/api/v1/items/twin/recommendations?k=5&kinds=top,full")
    assert new_item.status_code == 200
    _assert_exact(new_item.json, db_session, "twin", ("top", "full"), 5)


def test_deleted_items_disappear_at_once_and_after_the_fold(
    client, db_session, cache_redis, fold
) -> None:
    rng = np.random.default_rng(4)
    add_catalogue(db_session, _catalogue(rng, 40, 4))
    fold()
    url = "/api/v1/items/sku-002/recommendations?k=8"
    before = client.get(url).json
    doomed = {h["sku"] for h in before["results"]["full"][:4]}
    doomed_ids = {r[0] for r in stored_vectors(db_session, "full") if r[1] in doomed}
    for sku in doomed:
        delete_item(db_session, sku)
    after = client.get(url).json
    assert doomed.isdisjoint(h["sku"] for kind in KINDS for h in after["results"][kind])
    _assert_exact(after, db_session, "sku-002", KINDS, 8)
    assert len(after["results"]["full"]) == 8
    report = fold()
    assert report["lists_removed"] >= 4
    body = client.get(url).json
    _assert_exact(body, db_session, "sku-002", KINDS, 8)
    # The deleted items' own lists are gone from the cache, not left to eat memory.
    generation = lists_cache.read_pointer(cache_redis)
    keys = [
        k.decode() for k in cache_redis.scan_iter(match=lists_cache.generation_pattern(generation))
    ]
    owners = {int(key.rsplit(":", 1)[1]) for key in keys if ":l:" in key}
    assert owners and not owners & doomed_ids


def test_openapi_shows_the_kinds_default_as_a_client_writes_it(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/items/{sku}/recommendations"]["get"]
    kinds = next(p for p in operation["parameters"] if p["name"] == "kinds")
    assert kinds["schema"]["default"] == "top,bottom,full"
    # What the default says is what omitting the parameter does.
    assert tuple(kinds["schema"]["default"].split(",")) == tuple(k.value for k in KINDS)


def _stored_jpeg(settings, seed: int, size: tuple[int, int]) -> str:
    return MediaStore(settings.media_root).put_bytes(jpeg_bytes(seed, size)).key


def _crops_of(body: dict) -> dict[str, dict[str, str | None]]:
    """Per kind: hit SKU -> its crop URL (absent key shown as the string 'absent')."""
    return {
        kind: {h["sku"]: h.get("crop_url", "absent") for h in hits}
        for kind, hits in body["results"].items()
    }


def test_top_and_bottom_hits_carry_the_matched_crop_from_every_read_path(
    settings, client, db_session, cache_redis, fold
) -> None:
    top_b, bottom_b, top_c = (
        _stored_jpeg(settings, 1, (20, 40)),
        _stored_jpeg(settings, 2, (40, 20)),
        _stored_jpeg(settings, 3, (30, 30)),
    )
    old_top = _stored_jpeg(settings, 4, (10, 10))
    zero, one = np.zeros(4, np.float32), np.ones(4, np.float32)
    # b's crops of an older model version are not the answer's.
    add_item(db_session, "b", {"top": one}, version="older", crop_keys={"top": old_top})
    add_item(db_session, "a", {"top": zero, "bottom": zero, "full": zero})
    add_item(db_session, "c", {"top": one * 2, "full": one}, crop_keys={"top": top_c})
    fold()
    # b gets this version's vectors after the fold: its label comes with the changes the lists
    # have not seen.
    b = db_session.scalars(select(Item.id).where(Item.sku == "b")).one()
    crops = {"top": top_b, "bottom": bottom_b}
    for kind, vector in {"top": one, "bottom": one, "full": one * 2}.items():
        db_session.add(
            Embedding(
                item_id=b,
                kind=kind,
                model_version=VERSION,
                dim=4,
                vector=encode(vector),
                crop_key=crops.get(kind),
            )
        )
    db_session.commit()
    url = "/api/v1/items/a/recommendations"
    want = {
        "top": {"b": f"/media/{top_b}", "c": f"/media/{top_c}"},
        "bottom": {"b": f"/media/{bottom_b}"},
        "full": {"c": "absent", "b": "absent"},
    }
    assert _crops_of(client.get(url).json) == want
    fold()  # from the cached lists, labels read with the changes
    assert _crops_of(client.get(url).json) == want
    cache_redis.flushdb()  # from PostgreSQL's lists, labels read afterwards
    assert _crops_of(client.get(url).json) == want

    # A hit without a stored crop says so with null, beside its photo.
    add_item(db_session, "d", {"top": zero.copy()})
    first = client.get(f"{url}?kinds=top&k=1").json["results"]["top"][0]
    assert first["sku"] == "d" and first["crop_url"] is None and first["image_url"]

    served = client.get(f"/media/{top_b}")
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.data == jpeg_bytes(1, (20, 40))
    assert Image.open(io.BytesIO(served.data)).size == (20, 40)


def test_crop_urls_add_no_statement_per_hit(client, db_session, fold, monkeypatch) -> None:
    rng = np.random.default_rng(9)
    catalogue = _catalogue(rng, 40, 4)
    ids = add_catalogue(db_session, catalogue)
    db_session.execute(
        update(Embedding)
        .where(Embedding.kind.in_(["top", "bottom"]), Embedding.item_id.in_(list(ids.values())))
        .values(crop_key="cd" * 32)
    )
    db_session.commit()
    fold()
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor, query, *args, **kwargs):
        statements.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    def statements_for(k: int) -> int:
        statements.clear()
        # At the driver: the read path runs its statements on psycopg directly, past
        # SQLAlchemy's execution events.
        with monkeypatch.context() as patch:
            patch.setattr(psycopg.Cursor, "execute", counted)
            body = client.get(f"/api/v1/items/sku-001/recommendations?k={k}").json
        assert len(body["results"]["top"]) == k
        assert all(h["crop_url"] == f"/media/{'cd' * 32}" for h in body["results"]["top"])
        # The pool's liveness ping on checkout (SELECT 1) reads no table.
        return sum(1 for statement in statements if " FROM " in statement.upper())

    # The item, then its lists' changes with every hit's label and crops: two statements.
    assert statements_for(1) == statements_for(20) == 2
