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

# item id, vector: a matrix needs nothing else (a join with items for more cost a tenth of the
# full computation's time at 20k items).
_ROW_TYPES = ["int8", "bytea"]


@dataclass(frozen=True)
class VectorRow:
    item_id: int
    vector: bytes


def stream_vectors(conn: PgConnection, model_version: str, kind: str) -> Iterator[VectorRow]:
    """Every vector of one (model_version, kind), ordered by item id."""
    query = sql.SQL(
        "COPY (SELECT item_id, vector FROM embeddings"
        " WHERE model_version = {version} AND kind = {kind}"
        " ORDER BY item_id) TO STDOUT (FORMAT BINARY)"
    ).format(version=sql.Literal(model_version), kind=sql.Literal(kind))
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(_ROW_TYPES)
        for item_id, vector in copy.rows():
            yield VectorRow(item_id, vector)


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
