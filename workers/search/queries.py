"""Exact searches over this worker's matrices: an uploaded photo's vectors, or an item whose own
list is not ready (new, re-photographed, or too many of its neighbours changed at once).

Each search first brings the matrices up to one PostgreSQL snapshot (workers.search.index), so
the answer equals a brute force over the vectors PostgreSQL holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from shared.search.filters import (
    FamilyPicker,
    FilterSpec,
    Key,
    containment,
    key_of_text,
    key_sql,
    predicate,
)
from shared.search.knn import top_k
from workers.search.filtered import filtered_top
from workers.search.index import KindMatrix, VectorIndex, get_index
from workers.search.snapshot import read_snapshot

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.search.loader import PgConnection

Ranked = list[tuple[int, float]]


def passing_sql(spec: FilterSpec) -> tuple[str, dict[str, object]]:
    """The statement selecting the ids of the items that pass the conditions (some needed)."""
    where = predicate(spec, "attributes", "pyformat")
    params: dict[str, object] = dict(where.params)
    # Equality conditions go through the attributes index first (a selective filter's items,
    # not a scan of every item's JSONB); the whole predicate still decides.
    indexed = containment(spec, "attributes")
    sql = where.sql
    if indexed is not None:
        sql = f"{indexed.sql} AND {where.sql}"
        params.update(indexed.params)
    # Only placeholders and operators are spliced in (shared.search.filters).
    return f"SELECT id FROM items WHERE {sql}", params  # noqa: S608


def _passing_ids(conn: PgConnection, spec: FilterSpec) -> np.ndarray | None:
    """The ids of the items that pass the conditions now (None: no conditions, all pass)."""
    if not spec.conditions:
        return None
    rows = conn.execute(*passing_sql(spec)).fetchall()
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def _family_keys(
    conn: PgConnection, spec: FilterSpec
) -> tuple[Callable[[np.ndarray], dict[int, tuple[Key | None, Key | None]]], bool]:
    """A reader of items' (distinct, same) keys, and whether the families need it at all."""
    columns: list[str] = []
    params: dict[str, object] = {}
    for label, name in (("dkey", spec.distinct), ("skey", spec.exclude_same)):
        if name is None:
            columns.append("NULL")
            continue
        sql, extra = key_sql("attributes", name, f"fam_{label}", "pyformat")
        columns.append(sql)
        params.update(extra)

    sql = f"SELECT id, {', '.join(columns)} FROM items WHERE id = ANY(%(ids)s)"  # noqa: S608

    def read(item_ids: np.ndarray) -> dict[int, tuple[Key | None, Key | None]]:
        rows = conn.execute(sql, {**params, "ids": item_ids.tolist()}).fetchall()
        return {int(r[0]): (key_of_text(r[1]), key_of_text(r[2])) for r in rows}

    return read, spec.distinct is not None or spec.exclude_same is not None


def _synced(
    index: VectorIndex, conn: PgConnection, version: str, kinds: Iterable[str]
) -> dict[str, KindMatrix]:
    """The kinds' matrices brought up to ``conn``'s snapshot (its fold state read once)."""
    state = index.fold_state(conn)
    return {kind: index.sync(conn, version, kind, state) for kind in kinds}


def _search(
    conn: PgConnection,
    matrices: Mapping[str, KindMatrix],
    queries: Mapping[str, np.ndarray],
    k: int,
    exclude_item_id: int | None,
    spec: FilterSpec | None = None,
) -> dict[str, Ranked]:
    spec = spec or FilterSpec()
    passing = _passing_ids(conn, spec)
    keys, families = _family_keys(conn, spec)
    own: Key | None = None
    if spec.exclude_same is not None and exclude_item_id is not None:
        own = keys(np.array([exclude_item_id], dtype=np.int64)).get(exclude_item_id, (None, None))[
            1
        ]
    out: dict[str, Ranked] = {}
    for kind, query in queries.items():
        matrix = matrices[kind]
        if matrix.n == 0:
            out[kind] = []
            continue
        exclude = None
        if exclude_item_id is not None and exclude_item_id in matrix.row_of:
            exclude = np.array([matrix.row_of[exclude_item_id]], dtype=np.int64)
        if spec.empty:
            found = top_k(
                matrix.live_vectors,
                matrix.live_norms,
                matrix.live_ids,
                query,
                k,
                exclude_rows=exclude,
            )
            ids = matrix.live_ids[found.rows]
            out[kind] = [(int(i), float(d)) for i, d in zip(ids, found.distances, strict=True)]
            continue
        rows = None
        if passing is not None:
            rows = np.fromiter(
                (matrix.row_of[i] for i in passing.tolist() if i in matrix.row_of), dtype=np.int64
            )
        picker = FamilyPicker(spec, own)
        out[kind] = filtered_top(
            matrix, query, rows, exclude, k, picker, keys if families else None
        )
    return out


def search_vectors(
    settings: Settings,
    version: str,
    queries: Mapping[str, np.ndarray],
    k: int,
    spec: FilterSpec | None = None,
) -> dict[str, Ranked]:
    """The k nearest catalogue items of each kind to each query vector that pass ``spec``."""
    index = get_index()
    with index.lock, read_snapshot(settings) as conn:
        matrices = _synced(index, conn, version, queries)
        return _search(conn, matrices, queries, k, None, spec)


def search_item(
    settings: Settings,
    item_id: int,
    version: str,
    kinds: Sequence[str],
    k: int,
    spec: FilterSpec | None = None,
) -> dict[str, Ranked] | None:
    """The k nearest other items (passing ``spec``) for an item's own vectors now; None when
    the item is gone."""
    index = get_index()
    with index.lock, read_snapshot(settings) as conn:
        # The item's own vectors as the snapshot holds them: its rows of the synced matrices
        # (the same float32 values PostgreSQL stores), not a second read of them.
        matrices = _synced(index, conn, version, kinds)
        queries = {
            kind: m.vectors[m.row_of[item_id]].copy()
            for kind, m in matrices.items()
            if item_id in m.row_of
        }
        if not queries:
            exists = conn.execute("SELECT 1 FROM items WHERE id = %s", (item_id,)).fetchone()
            if exists is None:
                return None
        return _search(conn, matrices, queries, k, item_id, spec)
