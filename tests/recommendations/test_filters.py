"""Attribute filters: the parameters' rules, the SQL predicate against its Python definition
(over jsonb values chosen to trip equality: 12, 12.0, "12", true, 1, null, nested), the 422s,
and attribute PATCHes (RFC 7396) that answers follow at once."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from sqlalchemy import text

from shared.search import filters
from shared.search.filters import FilterError, FilterSpec
from tests.recommendations.filter_oracle import attributes_of, catalogue_rows
from tests.recommendations.filter_oracle import filtered_brute_force as oracle
from tests.recommendations.helpers import add_item
from web.services.attributes import merge_patch

TRICKY_VALUES = [12, 12.0, "12", True, False, 1, 0, None, "red", "Red", "", 3.5, -2, [1], {"a": 1}]


def _set_attributes(db_session, sku: str, attributes: dict | str) -> None:
    raw = attributes if isinstance(attributes, str) else json.dumps(attributes)
    db_session.execute(
        text("UPDATE items SET attributes = CAST(:a AS jsonb) WHERE sku = :sku"),
        {"a": raw, "sku": sku},
    )
    db_session.commit()


def test_parameters_parse_as_the_rules_say() -> None:
    spec = filters.parse(
        [
            ("attr.in_stock", "true"),
            ("attr.size", "12"),
            ("attr.size", '"12"'),
            ("attr.color", "red"),
            ("attr.color.not", "blue"),
            ("attr.price.min", "10"),
            ("attr.price.max", "20.5"),
            ("attr.price.max", "30"),
            ("k", "5"),
        ],
        distinct="style",
        exclude_same="style",
    )
    by_slot = {(c.name, c.op): c for c in spec.conditions}
    assert by_slot[("in_stock", "eq")].values == (True,)
    assert by_slot[("size", "eq")].values == (Decimal(12), "12")
    assert by_slot[("color", "eq")].values == ("red",)
    assert by_slot[("color", "not")].values == ("blue",)
    assert by_slot[("price", "min")].bound == Decimal(10)
    assert by_slot[("price", "max")].bound == Decimal("20.5")  # the tighter of the two
    assert spec.count == 8 and spec.distinct == "style" and spec.exclude_same == "style"
    assert filters.from_payload(spec.to_payload()) == spec


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ([("attr.color.like", "red")], "unknown_filter_operator"),
        ([("attr.a.b.not", "x")], "unknown_filter_operator"),
        ([("attr.price.min", "cheap")], "invalid_filter"),
        ([("attr.price.max", "nan")], "invalid_filter"),
        ([("attr.price.max", "1e999999")], "invalid_filter"),
        ([("attr.", "x")], "invalid_filter"),
        ([("attr.a\x00", "x")], "invalid_filter"),
        ([("attr.a", "x\x00")], "invalid_filter"),
        ([("attr.n", str(i)) for i in range(21)], "too_many_filters"),
    ],
)
def test_bad_filters_are_refused_with_a_stable_code(client, db_session, pairs, code) -> None:
    with pytest.raises(FilterError) as raised:
        filters.parse(pairs)
    assert raised.value.code == code
    add_item(db_session, "a", {"full": np.zeros(3, np.float32)})
    response = client.get("/api/v1/items/a/recommendations", query_string=pairs)
    assert response.status_code == 422, response.json
    assert response.json["code"] == code and response.json["message"]


def test_twenty_conditions_are_accepted(client, db_session, fold) -> None:
    add_item(db_session, "a", {"full": np.zeros(3, np.float32)})
    add_item(db_session, "b", {"full": np.ones(3, np.float32)})
    fold()
    pairs = [("attr.n.not", str(i)) for i in range(20)]
    response = client.get("/api/v1/items/a/recommendations", query_string=pairs)
    assert response.status_code == 200
    assert [h["sku"] for h in response.json["results"]["full"]] == ["b"]


def _random_spec(rng: np.random.Generator, names: list[str]) -> FilterSpec:
    pairs = []
    for _ in range(int(rng.integers(1, 5))):
        name = str(rng.choice(names))
        op = str(rng.choice(["", ".not", ".min", ".max"]))
        if op in (".min", ".max"):
            raw = str(rng.choice(["0", "1", "12", "12.0", "3.5", "-2", "11.99"]))
        else:
            raw = json.dumps(TRICKY_VALUES[int(rng.integers(len(TRICKY_VALUES)))])
            if rng.random() < 0.3:
                raw = str(rng.choice(["red", "12", "true", "null", "[1]", '{"a": 1}']))
        pairs.append((f"attr.{name}{op}", raw))
    return filters.parse(pairs)


def test_sql_predicate_equals_its_python_definition(db_session) -> None:
    rng = np.random.default_rng(20)
    names = ["a", "b", "c"]
    for i in range(60):
        attributes = {
            name: TRICKY_VALUES[int(rng.integers(len(TRICKY_VALUES)))]
            for name in names
            if rng.random() < 0.75
        }
        add_item(db_session, f"i{i:02d}", {"full": np.zeros(2, np.float32)})
        _set_attributes(db_session, f"i{i:02d}", attributes)
    rows = catalogue_rows(db_session, "full")
    for _ in range(300):
        spec = _random_spec(rng, names)
        where = filters.predicate(spec, "attributes", "named")
        got = set(
            db_session.execute(text(f"SELECT id FROM items WHERE {where.sql}"), where.params)  # noqa: S608
            .scalars()
            .all()
        )
        want = {r[0] for r in rows if filters.matches(spec, r[3])}
        assert got == want, spec


def test_missing_attributes_pass_only_not(db_session) -> None:
    spec_not = filters.parse([("attr.color.not", "red")])
    assert filters.matches(spec_not, {}) and not filters.matches(spec_not, {"color": "red"})
    assert filters.matches(spec_not, {"color": None})
    for pairs in ([("attr.color", "red")], [("attr.p.min", "0")], [("attr.p.max", "0")]):
        assert not filters.matches(filters.parse(pairs), {})
    # Text is not a number, and a boolean is neither 1 nor "true".
    assert not filters.matches(filters.parse([("attr.p.min", "0")]), {"p": "12"})
    assert not filters.matches(filters.parse([("attr.p", "1")]), {"p": True})
    assert not filters.matches(filters.parse([("attr.p", '"true"')]), {"p": True})
    assert filters.matches(filters.parse([("attr.p", "12")]), {"p": Decimal("12.0")})


def test_a_filter_nothing_passes_is_an_empty_200(client, db_session, fold) -> None:
    for i in range(5):
        add_item(db_session, f"s{i}", {"full": np.full(3, i, np.float32)})
    fold()
    response = client.get("/api/v1/items/s0/recommendations?attr.color=red&kinds=full")
    assert response.status_code == 200
    assert response.json["results"] == {"full": []}


def test_merge_patch_follows_rfc_7396() -> None:
    # The examples of RFC 7396, appendix A (those whose target is an object).
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, want in cases:
        assert merge_patch(target, patch) == want


def test_patch_one_item_changes_answers_at_once(client, db_session, fold, auth_headers) -> None:
    for i in range(6):
        add_item(db_session, f"s{i}", {"full": np.full(3, i, np.float32)})
    fold()
    url = "/api/v1/items/s0/recommendations?kinds=full&k=3&attr.in_stock=true"
    assert client.get(url).json["results"]["full"] == []
    body = {"attributes": {"in_stock": True, "price": 12.5, "dims": {"w": 1, "h": 2}}}
    assert client.patch("/api/v1/items/s3", json=body).status_code == 401
    response = client.patch("/api/v1/items/s3", json=body, headers=auth_headers)
    assert response.status_code == 200, response.json
    assert response.json["attributes"] == body["attributes"]
    assert [h["sku"] for h in client.get(url).json["results"]["full"]] == ["s3"]
    patch = {"attributes": {"in_stock": None, "dims": {"h": None, "d": 3}}}
    response = client.patch("/api/v1/items/s3", json=patch, headers=auth_headers)
    assert response.json["attributes"] == {"price": 12.5, "dims": {"w": 1, "d": 3}}
    assert client.get(url).json["results"]["full"] == []
    # A merged document travels as a text[] literal: quotes and backslashes arrive as sent.
    tricky = {"attributes": {"dims": {"note": 'a "quoted" \\ back\\slash, {braces}'}}}
    response = client.patch("/api/v1/items/s3", json=tricky, headers=auth_headers)
    assert response.json["attributes"]["dims"] == {"w": 1, "d": 3, **tricky["attributes"]["dims"]}
    missing = client.patch("/api/v1/items/nope", json=body, headers=auth_headers)
    assert missing.status_code == 404 and missing.json["code"] == "item_not_found"
    bad = client.patch("/api/v1/items/s3", json={"attributes": [1]}, headers=auth_headers)
    assert bad.status_code == 422


def test_bulk_patch_reports_unknown_skus_and_applies_the_rest(
    client, db_session, fold, auth_headers
) -> None:
    for i in range(4):
        add_item(db_session, f"s{i}", {"full": np.full(3, i, np.float32)})
    # More digits than a float holds: a patch of another key must not round it.
    _set_attributes(db_session, "s1", '{"price": 10, "exact": 0.10000000000000000000001}')
    _set_attributes(db_session, "s3", {"a": 1, "b": 2})
    fold()
    body = {
        "items": [
            {"sku": "s1", "attributes": {"in_stock": True}},
            {"sku": "ghost", "attributes": {"in_stock": True}},
            {"sku": "s2", "attributes": {"in_stock": True}},
            {"sku": "s2", "attributes": {"in_stock": False}},
            {"sku": "s3", "attributes": {"a": None, "c": [1]}},
        ]
    }
    response = client.patch("/api/v1/items", json=body, headers=auth_headers)
    assert response.status_code == 200, response.json
    assert response.json["updated"] == 4 and response.json["not_found"] == 1
    assert [o["status"] for o in response.json["items"]] == [
        "updated",
        "not_found",
        "updated",
        "updated",
        "updated",
    ]
    assert attributes_of(db_session, "s3") == {"b": 2, "c": [1]}
    assert attributes_of(db_session, "s2") == {"in_stock": False}  # in order: the last wins
    s1 = attributes_of(db_session, "s1")
    assert s1["in_stock"] is True and s1["price"] == 10
    assert s1["exact"] == Decimal("0.10000000000000000000001")
    got = client.get("/api/v1/items/s0/recommendations?kinds=full&attr.in_stock=true").json
    assert [h["sku"] for h in got["results"]["full"]] == ["s1"]
    too_many = {"items": [{"sku": f"x{i}", "attributes": {}} for i in range(10_001)]}
    response = client.patch("/api/v1/items", json=too_many, headers=auth_headers)
    assert response.status_code == 422 and response.json["code"] == "validation_error"
    nan = client.patch(
        "/api/v1/items",
        data='{"items": [{"sku": "s1", "attributes": {"p": NaN}}]}',
        content_type="application/json",
        headers=auth_headers,
    )
    assert nan.status_code in (400, 422)


def test_families_on_the_lists_path(client, db_session, fold) -> None:
    """distinct and exclude_same over a list that holds every item (no worker involved)."""
    rng = np.random.default_rng(7)
    for i in range(30):
        add_item(db_session, f"s{i:02d}", {"full": rng.integers(0, 3, 4).astype(np.float32)})
        attributes = {"style": i % 6} if i % 7 else {}
        _set_attributes(db_session, f"s{i:02d}", attributes)
    fold()
    rows = catalogue_rows(db_session, "full")
    cases = (
        {"distinct": "style"},
        {"exclude_same": "style"},
        {"distinct": "style", "exclude_same": "style", "attr.style.not": "2"},
    )
    _assert_pages_are_brute_force(client, rows, ("s00", "s01", "s08"), cases, ks=(10,))


def test_the_lists_walk_is_exact_at_every_pass_rate(client, db_session, fold) -> None:
    """The walk reads the lists in slices sized from the share that passed so far: whatever
    that share (all, half, a seventh, one item, none), the answer is the brute force's."""
    rng = np.random.default_rng(11)
    for i in range(70):
        add_item(db_session, f"w{i:02d}", {"full": rng.standard_normal(6).astype(np.float32)})
        attributes = {"half": i % 2, "seventh": i % 7, "one": i == 41, "style": i % 9}
        _set_attributes(db_session, f"w{i:02d}", attributes)
    fold()
    rows = catalogue_rows(db_session, "full")
    cases = (
        {},
        {"attr.half": "0"},
        {"attr.seventh": "3"},
        {"attr.one": "true"},
        {"attr.seventh": "99"},
        {"attr.half": "1", "distinct": "style"},
        {"attr.seventh.not": "0", "exclude_same": "style"},
    )
    _assert_pages_are_brute_force(client, rows, ("w00", "w13", "w41"), cases, ks=(1, 4, 10))


def test_a_broad_filter_reads_only_the_nearest_entries(
    client, db_session, fold, monkeypatch
) -> None:
    """Half the items pass: the first slice (a few entries per wanted hit) is enough, not
    every entry of every list."""
    rng = np.random.default_rng(12)
    for i in range(80):
        vectors = {kind: rng.standard_normal(6).astype(np.float32) for kind in ("full", "top")}
        add_item(db_session, f"b{i:02d}", vectors)
        _set_attributes(db_session, f"b{i:02d}", {"in_stock": i % 2 == 0})
    fold()
    read: list[int] = []
    execute = psycopg.Cursor.execute

    def counted(cursor, query, params=None, *args, **kwargs):
        if isinstance(params, dict) and "flt0_name" in params:
            read.append(params["ids"].count(",") + 1)
        return execute(cursor, query, params, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.Cursor, "execute", counted)
        body = client.get(
            "/api/v1/items/b00/recommendations?k=5&kinds=full,top&attr.in_stock=true"
        ).json
    assert [len(body["results"][kind]) for kind in ("full", "top")] == [5, 5]
    # One statement unless a list's first 20 entries hold fewer than 5 that pass.
    assert 1 <= len(read) <= 2 and read[0] <= 2 * 20 + 1
    assert sum(read) < 2 * 79


def test_bulk_patches_load_as_the_nested_schema_loads_them() -> None:
    """Plainly valid patches skip the nested schema load; what it loads and what it refuses
    (with its details) stays the nested schema's own."""
    from marshmallow import Schema, ValidationError, fields, validate

    from web.api.schemas import ItemAttributesPatchSchema, ItemsPatchSchema
    from web.services.attributes import MAX_PATCH_ITEMS

    class Reference(Schema):
        items = fields.List(
            fields.Nested(ItemAttributesPatchSchema),
            required=True,
            validate=validate.Length(min=1, max=MAX_PATCH_ITEMS),
        )

    good = {"sku": "a-1", "attributes": {"in_stock": True, "price": 12.5, "gone": None}}
    bodies = [
        {"items": [good, {"sku": "b", "attributes": {"x": {"y": [1, "2"]}}}]},
        {"items": [good, {"sku": "bad/sku", "attributes": {}}]},
        {"items": [good, {"sku": "c", "attributes": {"n": float("nan")}}]},
        {"items": [good, {"sku": "c", "attributes": {"t": "a\x00b"}}]},
        {"items": [good, {"sku": "c", "attributes": {}, "extra": 1}]},
        {"items": [good, {"sku": "c"}]},
        {"items": [good, {"sku": 5, "attributes": {}}]},
        {"items": [good, {"sku": "c", "attributes": [1]}]},
        {"items": [good, "not an object"]},
        {"items": [{"sku": "  padded  ", "attributes": {}}]},
        {"items": [{"sku": "line\n", "attributes": {}}]},
        {"items": []},
        {"items": "nope"},
    ]
    for body in bodies:
        try:
            want: object = Reference().load(body)
        except ValidationError as exc:
            want = ("refused", exc.messages)
        try:
            got: object = ItemsPatchSchema().load(body)
        except ValidationError as exc:
            got = ("refused", exc.messages)
        assert got == want, body


def _assert_pages_are_brute_force(
    client, rows, skus: tuple[str, ...], cases: tuple[dict[str, str], ...], ks: tuple[int, ...]
) -> None:
    """Each SKU's whole-photo page, for every case of parameters and every k, is the oracle's
    answer over ``rows`` (SKUs and distances)."""
    for sku in skus:
        mine = next(r for r in rows if r[1] == sku)
        for params in cases:
            spec = filters.parse(
                [(k, v) for k, v in params.items() if k.startswith("attr.")],
                params.get("distinct"),
                params.get("exclude_same"),
            )
            for k in ks:
                want = oracle(rows, mine[2], k, spec, mine[0], mine[3])
                got = client.get(
                    f"/api/v1/items/{sku}/recommendations",
                    query_string={**params, "kinds": "full", "k": k},
                ).json["results"]["full"]
                assert [h["sku"] for h in got] == [s for s, _ in want], (sku, params, k)
                assert [h["distance"] for h in got] == pytest.approx([d for _, d in want], rel=1e-9)
