"""Filtered product pages against brute force over PostgreSQL, through a real query worker.

Random attributes, random filters of every operator, ``distinct`` and ``exclude_same``, with
inserts, deletes, re-photos and attribute PATCHes (one item and bulk) interleaved and folds at
random moments. Catalogues are larger than a list, so selective filters and long runs of one
family cannot be answered from the lists: the worker answers those, restricted to the items
that pass. Every answer must equal filter_oracle.filtered_brute_force at that moment.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import text

from shared.queueing import QUEUE_QUERY
from shared.search import filters
from shared.search.lists import LIST_WIDTH
from tests.recommendations.filter_oracle import attributes_of, catalogue_rows
from tests.recommendations.filter_oracle import filtered_brute_force as oracle
from tests.recommendations.helpers import add_item, delete_item, replace_vector
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.e2e
KINDS = ("full", "top")


@pytest.fixture
def worker_app(settings, app, worker_log):
    settings = settings.replace(
        model_dir=None, embedder_weights="random", embedder_input_size=64, query_timeout_s=120.0
    )
    app.config["SETTINGS"] = settings
    worker = WorkerProcess(settings, worker_log, queues=(QUEUE_QUERY,))
    worker.start()
    try:
        yield settings
    finally:
        worker.stop()


def _vector(rng: np.random.Generator, dim: int, tie_heavy: bool) -> np.ndarray:
    if tie_heavy:
        return rng.integers(0, 3, size=dim).astype(np.float32)
    return rng.standard_normal(dim).astype(np.float32)


def _attributes(rng: np.random.Generator) -> dict:
    out: dict = {}
    if rng.random() < 0.85:
        out["style"] = int(rng.integers(0, 30))
    if rng.random() < 0.9:
        out["in_stock"] = bool(rng.random() < 0.5)
    if rng.random() < 0.9:
        out["price"] = round(float(rng.uniform(5, 100)), 2) if rng.random() < 0.9 else "12"
    if rng.random() < 0.8:
        out["color"] = str(rng.choice(["red", "blue", "green", "black"]))
    out["size"] = [12, "12", 14, "M", 12.0][int(rng.integers(5))]
    if rng.random() < 0.03:
        out["rare"] = True
    return out


def _patch(rng: np.random.Generator) -> dict:
    """A merge patch: some keys set, some removed (null)."""
    patch: dict = {}
    if rng.random() < 0.6:
        patch["in_stock"] = bool(rng.random() < 0.5)
    if rng.random() < 0.3:
        patch["style"] = None if rng.random() < 0.3 else int(rng.integers(0, 30))
    if rng.random() < 0.3:
        patch["price"] = round(float(rng.uniform(5, 100)), 2)
    if rng.random() < 0.2:
        patch["color"] = None
    if rng.random() < 0.1:
        patch["rare"] = True
    return patch


def _params(rng: np.random.Generator) -> list[tuple[str, str]]:
    menu = [
        [("attr.in_stock", "true")],
        [("attr.color", "red"), ("attr.color", "blue")],
        [("attr.color.not", "black")],
        [("attr.color.not", "red"), ("attr.color.not", "green")],
        [("attr.price.min", str(round(float(rng.uniform(5, 60)), 2)))],
        [("attr.price.max", str(round(float(rng.uniform(20, 100)), 2)))],
        [("attr.size", "12")],
        [("attr.size", '"12"')],
        [("attr.rare", "true")],
        [("attr.style", str(int(rng.integers(0, 30))))],
        [("attr.style.not", str(int(rng.integers(0, 30))))],
    ]
    pairs: list[tuple[str, str]] = []
    for choice in rng.choice(len(menu), size=int(rng.integers(0, 4)), replace=False):
        pairs.extend(menu[int(choice)])
    if rng.random() < 0.4:
        pairs.append(("distinct", "style"))
    if rng.random() < 0.3:
        pairs.append(("exclude_same", "style"))
    if not pairs:
        pairs.append(("attr.in_stock.not", "false"))
    return pairs


def _spec(pairs: list[tuple[str, str]]) -> filters.FilterSpec:
    named = dict(pairs)
    return filters.parse(pairs, named.get("distinct"), named.get("exclude_same"))


def _check(client, db_session, sku: str, pairs: list[tuple[str, str]], k: int) -> None:
    spec = _spec(pairs)
    response = client.get(
        f"/api/v1/items/{sku}/recommendations",
        query_string=[*pairs, ("k", str(k)), ("kinds", ",".join(KINDS))],
    )
    assert response.status_code == 200, response.json
    own_attributes = attributes_of(db_session, sku)
    for kind in KINDS:
        rows = catalogue_rows(db_session, kind)
        mine = [r for r in rows if r[1] == sku]
        got = response.json["results"][kind]
        if not mine:
            assert got == [] and kind in response.json["missing"]
            continue
        want = oracle(rows, mine[0][2], k, spec, mine[0][0], own_attributes)
        assert [h["sku"] for h in got] == [s for s, _ in want], (sku, kind, k, pairs)
        assert [h["distance"] for h in got] == pytest.approx([d for _, d in want], rel=1e-9)


class _Scenario:
    """A catalogue moving at random: each step is one kind of change a shop makes."""

    def __init__(self, rng, client, db_session, auth_headers, tie_heavy: bool) -> None:
        self.rng, self.client, self.db, self.headers = rng, client, db_session, auth_headers
        self.tie_heavy = tie_heavy
        self.dim = 5 if tie_heavy else 8
        self.names = iter(f"p{i:04d}" for i in range(10_000))
        self.live: list[str] = []

    def vector(self) -> np.ndarray:
        return _vector(self.rng, self.dim, self.tie_heavy)

    def insert(self, count: int = 6) -> None:
        for _ in range(count):
            sku = next(self.names)
            vectors = {"full": self.vector()}
            if self.rng.random() < 0.8:
                vectors["top"] = self.vector()
            add_item(self.db, sku, vectors)
            attributes = {"attributes": _attributes(self.rng)}
            response = self.client.patch(
                f"/api/v1/items/{sku}", json=attributes, headers=self.headers
            )
            assert response.status_code == 200, response.json
            self.live.append(sku)

    def pick(self, count: int) -> list[str]:
        return [str(s) for s in self.rng.choice(self.live, size=count, replace=False)]

    def delete(self) -> None:
        for sku in self.pick(4):
            delete_item(self.db, sku)
            self.live.remove(sku)

    def rephoto(self) -> None:
        for sku in self.pick(4):
            replace_vector(self.db, sku, "full", self.vector())

    def patch_one(self) -> None:
        (sku,) = self.pick(1)
        body = {"attributes": _patch(self.rng)}
        response = self.client.patch(f"/api/v1/items/{sku}", json=body, headers=self.headers)
        assert response.status_code == 200, response.json

    def patch_bulk(self) -> None:
        items = [{"sku": sku, "attributes": _patch(self.rng)} for sku in self.pick(40)]
        items.append({"sku": "never-was", "attributes": {"in_stock": True}})
        response = self.client.patch("/api/v1/items", json={"items": items}, headers=self.headers)
        assert response.status_code == 200 and response.json["not_found"] == 1

    def check(self) -> None:
        for sku in self.pick(4):
            for _ in range(2):
                k = int(self.rng.choice([1, 5, 10, 30]))
                _check(self.client, self.db, sku, _params(self.rng), k)


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "tie_heavy"), [(1, True), (2, False)], ids=str)
def test_filtered_answers_stay_exact_as_the_catalogue_moves(
    worker_app, client, db_session, fold, auth_headers, seed, tie_heavy
) -> None:
    rng = np.random.default_rng(seed)
    scenario = _Scenario(rng, client, db_session, auth_headers, tie_heavy)
    scenario.insert(LIST_WIDTH + 40)
    fold()
    scenario.check()
    steps = {
        "insert": scenario.insert,
        "delete": scenario.delete,
        "rephoto": scenario.rephoto,
        "patch_one": scenario.patch_one,
        "patch_bulk": scenario.patch_bulk,
    }
    # Every kind of step at least once, in a random order, then a few more.
    for action in [*rng.permutation(list(steps)), *rng.choice(list(steps), size=3)]:
        steps[str(action)]()
        if rng.random() < 0.5:
            fold()
        scenario.check()


@pytest.mark.slow
def test_a_selective_filter_returns_exactly_k_or_all_that_pass(
    worker_app, client, db_session, fold, auth_headers
) -> None:
    """Passing items are the farthest from the asking item (no list holds them): the answer
    has exactly k when k or more pass, and every passing item when fewer do."""
    rng = np.random.default_rng(11)
    n = LIST_WIDTH + 60
    for i in range(n):
        # Distance from p0000 grows with i: item i is at i along the first axis.
        vector = np.zeros(4, np.float32)
        vector[0] = i
        vector[1:] = rng.integers(0, 2, 3)
        add_item(db_session, f"p{i:04d}", {"full": vector})
    fold()
    k = 10
    for passing in (0, 3, k - 1, k, k + 5):
        far = [f"p{n - 1 - j:04d}" for j in range(passing)]
        body = {"items": [{"sku": sku, "attributes": {"tag": passing}} for sku in far]}
        if body["items"]:
            assert client.patch("/api/v1/items", json=body, headers=auth_headers).status_code == 200
        pairs = [("attr.tag", str(passing))]
        got = client.get(
            "/api/v1/items/p0000/recommendations",
            query_string=[*pairs, ("k", str(k)), ("kinds", "full")],
        ).json["results"]["full"]
        assert len(got) == min(k, passing)
        assert {h["sku"] for h in got} <= set(far)
        _check(client, db_session, "p0000", pairs, k)
    # A long run of one family: the 130 nearest share a style, so distinct must look past every
    # list to find k different ones.
    body = {
        "items": [
            {"sku": f"p{i:04d}", "attributes": {"style": 0 if i < 130 else i}} for i in range(n)
        ]
    }
    assert client.patch("/api/v1/items", json=body, headers=auth_headers).status_code == 200
    got = client.get("/api/v1/items/p0001/recommendations?kinds=full&k=10&distinct=style").json[
        "results"
    ]["full"]
    assert got[0]["sku"] in ("p0000", "p0002")  # the nearest of style 0
    assert [h["sku"] for h in got[1:]] == [f"p{i:04d}" for i in range(130, 139)]
    _check(client, db_session, "p0001", [("distinct", "style")], 10)
    _check(client, db_session, "p0001", [("exclude_same", "style")], 10)


@pytest.mark.slow
def test_photo_search_filters_and_families_are_exact(worker_app, client, db_session) -> None:
    import base64
    import io

    from PIL import Image

    from shared import task_names
    from shared.queueing import make_celery
    from tests.recommendations.helpers import add_catalogue

    pixels = np.random.default_rng(5).integers(0, 255, size=(96, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    photo = buffer.getvalue()
    answer = (
        make_celery(worker_app)
        .send_task(
            task_names.SEARCH_PHOTO,
            kwargs={"image": base64.b64encode(photo).decode("ascii"), "kinds": ["full"], "k": 1},
            queue=QUEUE_QUERY,
        )
        .get(timeout=300)
    )
    version = answer["model_version"]
    query = np.frombuffer(base64.b64decode(answer["vectors"]["full"]), dtype="<f4")
    rng = np.random.default_rng(6)
    noise = rng.standard_normal((60, query.size)).astype(np.float32)
    catalogue = {
        f"c{i:02d}": {"full": (query + noise[i] * 0.01 * (i + 1)).astype(np.float32)}
        for i in range(60)
    }
    add_catalogue(db_session, catalogue, version=version)
    for i in range(60):
        attributes = {"style": i // 4, "in_stock": i % 3 != 0, "price": i}
        db_session.execute(
            text("UPDATE items SET attributes = CAST(:a AS jsonb) WHERE sku = :sku"),
            {"a": json.dumps(attributes), "sku": f"c{i:02d}"},
        )
    db_session.commit()
    form = {"image": (io.BytesIO(photo), "p.png"), "k": "5", "kinds": "full"}
    form.update({"attr.in_stock": "true", "distinct": "style"})
    response = client.post(
        "/api/v1/recommendations?attr.price.min=10",
        data=form,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    spec = filters.parse([("attr.in_stock", "true"), ("attr.price.min", "10")], distinct="style")
    want = oracle(catalogue_rows(db_session, "full", version), query, 5, spec)
    got = response.json["results"]["full"]
    assert [h["sku"] for h in got] == [s for s, _ in want] and len(want) == 5
    assert [h["distance"] for h in got] == pytest.approx([d for _, d in want], rel=1e-9)
    refused = client.post(
        "/api/v1/recommendations",
        data={"image": (io.BytesIO(photo), "p.png"), "exclude_same": "style"},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422
