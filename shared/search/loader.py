"""Streaming vectors out of PostgreSQL with binary ``COPY (SELECT ...) TO STDOUT``.

psycopg 3 parses the binary COPY stream in C (psycopg-binary) with no ORM object per row: this
is the fastest way it offers to move hundreds of megabytes of bytea out of the database.

Workers load their matrices with it (workers.search.index), one (model version, kind) at a
time: vectors of different versions are never compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

# How workers talk to PostgreSQL outside the ORM: plain psycopg connections with tuple rows.
PgConnection = psycopg.Connection[TupleRow]

# item id, sku, media key, dim, vector
_ROW_TYPES = ["int8", "text", "text", "int4", "bytea"]


@dataclass(frozen=True)
class VectorRow:
    item_id: int
    sku: str
    media_key: str | None
    vector: bytes


def stream_vectors(conn: PgConnection, model_version: str, kind: str) -> Iterator[VectorRow]:
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


def one_row(cursor: psycopg.Cursor[TupleRow]) -> TupleRow:
    """The row a query that always answers one (an aggregate, ``RETURNING``) answered."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query answered no row")
    return row


def libpq_url(sqlalchemy_url: str) -> str:
    """A psycopg connection string from our SQLAlchemy URL (``postgresql+psycopg://``)."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
