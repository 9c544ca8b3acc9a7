"""The brute force filtered answers are judged by, written apart from the code under test.

Every item PostgreSQL holds now with a vector of the kind, its attributes read as exact JSON
(decimals), the conditions evaluated in Python (shared.search.filters.matches, itself checked
against PostgreSQL's jsonb in test_filters.py), every distance in float64, sorted by (distance,
item id), then the families applied by the plain definition: ``exclude_same`` drops every item
whose value equals the asking item's, ``distinct`` keeps the first item of each value.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import text

from shared.search.filters import FilterSpec, matches, value_key
from tests.recommendations.helpers import VERSION

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_ABSENT = object()


def catalogue_rows(session: Session, kind: str, version: str = VERSION) -> list[tuple]:
    """(item_id, sku, vector, attributes) of one kind, as PostgreSQL holds them now."""
    session.rollback()
    rows = session.execute(
        text(
            "SELECT i.id, i.sku, e.vector, CAST(i.attributes AS text) FROM items i"
            " JOIN embeddings e ON e.item_id = i.id"
            " WHERE e.kind = :kind AND e.model_version = :version"
        ),
        {"kind": kind, "version": version},
    ).all()
    return [
        (r[0], r[1], np.frombuffer(r[2], dtype="<f4"), json.loads(r[3], parse_float=Decimal))
        for r in rows
    ]


def attributes_of(session: Session, sku: str) -> dict[str, Any]:
    session.rollback()
    raw = session.execute(
        text("SELECT CAST(attributes AS text) FROM items WHERE sku = :sku"), {"sku": sku}
    ).scalar_one()
    return dict(json.loads(raw, parse_float=Decimal))


def filtered_brute_force(
    rows: list[tuple],
    query: np.ndarray,
    k: int,
    spec: FilterSpec,
    exclude_item_id: int | None = None,
    own_attributes: dict[str, Any] | None = None,
) -> list[tuple[str, float]]:
    passing = [r for r in rows if r[0] != exclude_item_id and matches(spec, r[3])]
    if not passing:
        return []
    matrix = np.stack([r[2] for r in passing]).astype(np.float64)
    dist = np.sqrt(((matrix - query.astype(np.float64)) ** 2).sum(axis=1))
    order = sorted(range(len(passing)), key=lambda i: (dist[i], passing[i][0]))
    own = _ABSENT
    if spec.exclude_same is not None and own_attributes is not None:
        own = own_attributes.get(spec.exclude_same, _ABSENT)
    seen: list[Any] = []
    out: list[tuple[str, float]] = []
    for i in order:
        attributes = passing[i][3]
        same = own is not _ABSENT and spec.exclude_same in attributes
        if same and value_key(attributes[spec.exclude_same]) == value_key(own):
            continue
        if spec.distinct is not None and spec.distinct in attributes:
            key = value_key(attributes[spec.distinct])
            if key in seen:
                continue
            seen.append(key)
        out.append((passing[i][1], float(dist[i])))
        if len(out) == k:
            break
    return out
