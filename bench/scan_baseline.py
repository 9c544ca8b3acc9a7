"""The baseline for bench.recommend: the read path as it was before neighbour lists.

Each web process holds every vector of every kind in memory (loaded once, here straight from
PostgreSQL; before, from the Redis matrix cache: the same arrays end up in memory) and answers
``GET /api/v1/items/<sku>/recommendations`` by scanning them: per request one indexed query for
the item, one for vectors newer than the copy (the delta), three exact top-k scans
(shared.search.knn.top_k), one check that the hits still exist, one for their SKUs. It is the
real app with that one view swapped, so parsing, serialisation and sessions cost the same.

Served by gunicorn as ``bench.scan_baseline:app`` with the bench's settings in the environment.
Not part of the product: web processes must never hold matrices (tests prove they do not).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from flask import jsonify, request
from sqlalchemy import text

from shared.config import load_settings
from shared.search.knn import squared_norms, top_k
from shared.search.loader import libpq_url
from shared.vocabulary import DISPLAY_ORDER
from web import create_app
from web.api.recommendation_schemas import RecommendationQuery, RecommendationsSchema
from web.errors import ApiError
from web.resources import db
from workers.search.index import load_matrix

_lock = threading.Lock()
_matrices: dict[str, Any] = {}


def _load() -> dict[str, Any]:
    import psycopg

    with _lock:
        if _matrices:
            return _matrices
        settings = load_settings()
        with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # The version of the newest vector, and the watermark of the copy (its delta).
            watermark, version = conn.execute(
                "SELECT id, model_version FROM embeddings ORDER BY id DESC LIMIT 1"
            ).fetchone()
            for kind in DISPLAY_ORDER:
                ids, vectors = load_matrix(conn, version, kind)
                _matrices[kind] = (vectors, squared_norms(vectors), ids)
            conn.execute("COMMIT")
        _matrices["version"] = version
        _matrices["watermark"] = watermark
    return _matrices


def scan_view(sku: str) -> Any:
    args = RecommendationQuery().load(dict(request.args))
    k, kinds = args["k"], args["kinds"]
    matrices = _load()
    session = db()
    item = session.execute(
        text("SELECT id FROM items WHERE sku = :sku"), {"sku": sku}
    ).scalar_one_or_none()
    if item is None:
        raise ApiError(404, "item_not_found", f"No item with SKU {sku!r}.")
    version = matrices["version"]
    session.execute(
        text(
            "SELECT e.item_id FROM embeddings e WHERE e.id > :w AND e.model_version = :v"
            " AND e.kind = ANY(:kinds)"
        ),
        {"w": matrices["watermark"], "v": version, "kinds": list(kinds)},
    ).all()
    hits: dict[str, list[tuple[int, float]]] = {}
    for kind in kinds:
        vectors, norms, ids = matrices[kind]
        row = int(np.searchsorted(ids, item))
        found = top_k(vectors, norms, ids, vectors[row], k, exclude_rows=np.array([row]))
        hits[kind] = list(zip(ids[found.rows].tolist(), found.distances.tolist(), strict=True))
    wanted = sorted({i for pairs in hits.values() for i, _ in pairs})
    session.execute(
        text("SELECT item_id FROM embeddings WHERE item_id = ANY(:ids) AND model_version = :v"),
        {"ids": wanted, "v": version},
    ).all()
    names = dict(
        session.execute(
            text("SELECT id, sku FROM items WHERE id = ANY(:ids)"), {"ids": wanted}
        ).all()
    )
    body = {
        "sku": sku,
        "model_version": version,
        "results": {
            kind: [{"sku": names[i], "distance": d, "image_url": None} for i, d in pairs]
            for kind, pairs in hits.items()
        },
        "missing": {},
    }
    return jsonify(RecommendationsSchema().dump(body))


def build() -> Any:
    application = create_app()
    application.view_functions["recommendations.item_recommendations"] = scan_view
    return application


app = build()
