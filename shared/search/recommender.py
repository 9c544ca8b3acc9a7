"""Exact "you may also like" over a cached generation, kept exact against PostgreSQL.

A generation is a snapshot. Between rebuilds (debounced, seconds) the catalogue moves on, so
every answer is corrected with two small indexed queries:

- embeddings inserted after the snapshot (``embeddings.id > max_embedding_id``, a primary-key
  range scan that is normally empty) are searched directly and merged; cached rows of the same
  items are ignored, since the new row supersedes them;
- the items an answer would return are checked to still have that vector (deleted items and
  removed crops drop out, and the search widens until k survivors are found).

The result equals a brute force over the vectors PostgreSQL holds now. The one case a rebuild
is still needed for: a vector rewritten *in place* (same row, new bytes) keeps its old cached
value until the debounced rebuild that the write scheduled has published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.search.knn import exact_squared_distances, top_k
from shared.search.matrix_cache import Generation, KindMatrix
from shared.vectors import decode


@dataclass(frozen=True)
class Hit:
    item_id: int
    sku: str
    media_key: str | None
    distance: float


@dataclass(frozen=True)
class DeltaRow:
    item_id: int
    sku: str
    media_key: str | None
    kind: str
    vector: np.ndarray


def fetch_delta(
    session: Session, generation: Generation, version: str, kinds: Sequence[str]
) -> list[DeltaRow]:
    """Vectors that arrived after the generation's snapshot."""
    rows = session.execute(
        text(
            "SELECT e.item_id, i.sku, i.media_key, e.kind, e.vector FROM embeddings e"
            " JOIN items i ON i.id = e.item_id"
            " WHERE e.id > :watermark AND e.model_version = :version AND e.kind = ANY(:kinds)"
        ),
        {"watermark": generation.max_embedding_id, "version": version, "kinds": list(kinds)},
    ).all()
    return [DeltaRow(r[0], r[1], r[2], r[3], decode(r[4])) for r in rows]


def _still_present(session: Session, version: str, kind: str, item_ids: Sequence[int]) -> set[int]:
    if not item_ids:
        return set()
    rows = session.execute(
        text(
            "SELECT item_id FROM embeddings WHERE model_version = :version AND kind = :kind"
            " AND item_id = ANY(:ids)"
        ),
        {"version": version, "kind": kind, "ids": list(item_ids)},
    ).scalars()
    return set(rows)


def nearest(
    session: Session,
    matrix: KindMatrix | None,
    delta: Sequence[DeltaRow],
    version: str,
    kind: str,
    query: np.ndarray,
    k: int,
    exclude_item_id: int | None = None,
) -> list[Hit]:
    """The k nearest items of one kind, nearest first, ties broken by item id."""
    fresh = [d for d in delta if d.kind == kind and d.item_id != exclude_item_id]
    fresh_ids = {d.item_id for d in fresh}
    excluded: set[int] = set(fresh_ids)
    if exclude_item_id is not None:
        excluded.add(exclude_item_id)

    fresh_hits: list[Hit] = []
    if fresh:
        block = np.stack([d.vector for d in fresh]).astype(np.float32, copy=False)
        dist = np.sqrt(exact_squared_distances(block, query))
        fresh_hits = [
            Hit(d.item_id, d.sku, d.media_key, float(x)) for d, x in zip(fresh, dist, strict=True)
        ]

    # Each round excludes at least one more deleted item, so this ends; normally it runs once.
    while True:
        cached: list[Hit] = []
        if matrix is not None and matrix.rows:
            found = top_k(
                matrix.vectors,
                matrix.sq_norms,
                matrix.item_ids,
                query,
                k,
                exclude_rows=matrix.rows_of(excluded),
            )
            cached = [
                Hit(
                    int(matrix.item_ids[r]),
                    matrix.skus[r],
                    matrix.media_keys[r],
                    float(dist),
                )
                for r, dist in zip(found.rows.tolist(), found.distances.tolist(), strict=True)
            ]
        merged = sorted(cached + fresh_hits, key=lambda h: (h.distance, h.item_id))[:k]
        to_check = [h.item_id for h in merged if h.item_id not in fresh_ids]
        present = _still_present(session, version, kind, to_check)
        gone = set(to_check) - present
        if not gone:
            return merged
        excluded |= gone
