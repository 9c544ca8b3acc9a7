"""Streaming vectors out of PostgreSQL with binary ``COPY (SELECT ...) TO STDOUT``.

psycopg 3 parses the binary COPY stream in C (psycopg-binary) with no ORM object per row: this
is the fastest way it offers to move hundreds of megabytes of bytea out of the database.

Which model version is current: the one with the most recently inserted embedding (highest
``embeddings.id``). Workers stamp every vector with their bundle's ``model_version``, so after a
model upgrade the newest ingestion wins. The cache still holds every version present (one
matrix set each) so that a query photo embedded by a worker still on the old bundle is compared
with vectors of its own version, never across versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# item id, sku, media key, dim, vector
_ROW_TYPES = ["int8", "text", "text", "int4", "bytea"]


@dataclass(frozen=True)
class CatalogueSnapshot:
    """What one consistent read of the catalogue saw, before any vector is streamed."""

    versions: tuple[str, ...]  # newest first
    current_version: str | None
    max_embedding_id: int  # every embedding with a larger id arrived after this snapshot
    kinds_by_version: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class VectorRow:
    item_id: int
    sku: str
    media_key: str | None
    vector: bytes


def begin_snapshot(conn: psycopg.Connection[Any]) -> CatalogueSnapshot:
    """Start a REPEATABLE READ read-only transaction and describe what it sees.

    Every later ``stream_vectors`` on the same connection reads the same snapshot, so the
    matrices of one generation and its watermark agree with each other.
    """
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    rows = conn.execute(
        "SELECT model_version, kind, max(id) FROM embeddings GROUP BY model_version, kind"
    ).fetchall()
    newest: dict[str, int] = {}
    kinds: dict[str, list[str]] = {}
    for version, kind, max_id in rows:
        newest[version] = max(newest.get(version, 0), int(max_id))
        kinds.setdefault(version, []).append(kind)
    versions = tuple(sorted(newest, key=lambda v: newest[v], reverse=True))
    return CatalogueSnapshot(
        versions=versions,
        current_version=versions[0] if versions else None,
        max_embedding_id=max(newest.values(), default=0),
        kinds_by_version={v: tuple(sorted(k)) for v, k in kinds.items()},
    )


def stream_vectors(
    conn: psycopg.Connection[Any], model_version: str, kind: str
) -> Iterator[VectorRow]:
    """Every vector of one (model_version, kind), ordered by item id."""
    query = sql.SQL(
        "COPY (SELECT e.item_id, i.sku, i.media_key, e.dim, e.vector"
        " FROM embeddings e JOIN items i ON i.id = e.item_id"
        " WHERE e.model_version = {version} AND e.kind = {kind}"
        " ORDER BY e.item_id) TO STDOUT (FORMAT BINARY)"
    ).format(version=sql.Literal(model_version), kind=sql.Literal(kind))
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(_ROW_TYPES)
        for item_id, sku, media_key, _dim, vector in copy.rows():
            yield VectorRow(item_id, sku, media_key, vector)


def libpq_url(sqlalchemy_url: str) -> str:
    """A psycopg connection string from our SQLAlchemy URL (``postgresql+psycopg://``)."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
