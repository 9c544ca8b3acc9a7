"""The product-page read: an item's neighbour lists, corrected by the changes they miss.

No vector matrix is involved. Per request: one indexed query for the item, one MGET of its lists
and the fold they include (the Redis cache), and one indexed query for the changes since that
fold (normally none) with the result's SKUs, images and crops. Each list is a prefix of the exact
order of every other item as of its fold; the answer is made exact against PostgreSQL *now* by:

- dropping every listed item that changed since (deleted, re-photographed, lost the kind): the
  rest of the list is still an exact prefix of the order over the unchanged items;
- adding every changed item that still has a vector, at its exact distance to this item
  (computed here from the two vectors; a handful of rows);
- giving up (``None``: a worker searches its matrices instead) when this item itself changed
  since its list was made, when it has no list yet, or when dropping left fewer than k entries
  in a list that did not hold every item.

When the cache has no generation or lacks a key, the lists and the changes come from
PostgreSQL in one statement (one snapshot), with the same rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import redis
from sqlalchemy import text

from shared.search import lists_cache
from shared.search.knn import exact_squared_distances
from shared.search.lists import NeighbourList, from_columns
from shared.vectors import decode
from shared.vocabulary import CROP_KINDS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# fold_id > this never holds: the PostgreSQL path wants only the changes no fold took in yet.
_NO_FOLD = 2**62


@dataclass(frozen=True)
class ItemRef:
    """An item as the read path needs it: which model version and kinds it has vectors for."""

    id: int
    sku: str
    status: str
    error: str | None
    version: str | None
    kinds: frozenset[str]


@dataclass(frozen=True)
class Neighbour:
    item_id: int
    distance: float


@dataclass(frozen=True)
class Label:
    """What an answer shows of a neighbour: its SKU, its photo and its garment crops."""

    sku: str
    media_key: str | None
    # Media keys of its crops in the answer's model version, by kind (kinds without one absent).
    crop_keys: Mapping[str, str] = field(default_factory=dict)


def _label(sku: str, media_key: str | None, crop_keys: Mapping[str, str] | None) -> Label:
    return Label(sku, media_key, dict(crop_keys or {}))


def find_item(session: Session, sku: str) -> ItemRef | None:
    rows = session.execute(
        text(
            "SELECT i.id, i.status, i.error, e.model_version, e.kind, e.id AS embedding_id,"
            " (SELECT model_version FROM embeddings ORDER BY id DESC LIMIT 1) AS newest_version"
            " FROM items i LEFT JOIN embeddings e ON e.item_id = i.id WHERE i.sku = :sku"
        ),
        {"sku": sku},
    ).all()
    if not rows:
        return None
    first = rows[0]
    embedded = [r for r in rows if r.kind is not None]
    # An item has one model version at a time (a re-ingest replaces the old vectors). Should it
    # hold two, the catalogue's current version (the newest vector's) wins, else its newest.
    versions = {r.model_version for r in embedded}
    if first.newest_version in versions:
        version = first.newest_version
    else:
        version = max(embedded, key=lambda r: r.embedding_id).model_version if embedded else None
    kinds = frozenset(r.kind for r in embedded if r.model_version == version)
    return ItemRef(first.id, sku, first.status, first.error, version, kinds)


@dataclass
class _Changes:
    """Per kind: changed item id -> its vector now (None: it has none any more)."""

    vectors: dict[str, dict[int, np.ndarray | None]]
    own: dict[str, np.ndarray]
    lists: dict[str, NeighbourList]
    labels: dict[int, Label]


# A labelled item's crop keys, kind -> key, for the kinds asked (NULL when it has none): one
# probe of the (item_id, kind, model_version) unique index per label. Spliced into the queries
# below (their noqa: S608): constants, every value in them a bound parameter.
_CROPS_OF = """(SELECT jsonb_object_agg(c.kind, c.crop_key) FROM embeddings c
      WHERE c.item_id = {item} AND c.model_version = :version AND c.kind = ANY(:crop_kinds)
        AND c.crop_key IS NOT NULL)"""
_CHANGED_CROPS = _CROPS_OF.format(item="ch.item_id")
_LABEL_CROPS = _CROPS_OF.format(item="i.id")

_CHANGES_SQL = text(
    f"""
    WITH ch AS (
        SELECT DISTINCT item_id, kind FROM list_changes
         WHERE model_version = :version AND kind = ANY(:kinds)
           AND (fold_id IS NULL OR fold_id > :applied)
    )
    SELECT 'list' AS part, kind, NULL::bigint AS item_id, neighbour_ids AS data,
           sq_distances AS distances, complete, NULL AS sku, NULL AS media_key,
           NULL::jsonb AS crops
      FROM neighbour_lists
     WHERE :with_lists AND model_version = :version AND item_id = :item_id
       AND kind = ANY(:kinds)
    UNION ALL
    SELECT 'change', ch.kind, ch.item_id, e.vector, NULL, NULL, i.sku, i.media_key,
           {_CHANGED_CROPS}
      FROM ch LEFT JOIN embeddings e
        ON e.item_id = ch.item_id AND e.model_version = :version AND e.kind = ch.kind
      LEFT JOIN items i ON i.id = ch.item_id
    UNION ALL
    SELECT 'own', e.kind, e.item_id, e.vector, NULL, NULL, NULL, NULL, NULL
      FROM embeddings e
     WHERE e.item_id = :item_id AND e.model_version = :version AND e.kind = ANY(:kinds)
       AND EXISTS (SELECT 1 FROM ch)
    UNION ALL
    SELECT 'label', NULL, i.id, NULL, NULL, NULL, i.sku, i.media_key,
           {_LABEL_CROPS}
      FROM items i WHERE i.id = ANY(:label_ids)
    """  # noqa: S608
)
# One statement, so one snapshot; each row's ``part`` says what it is: this item's stored
# ``list`` of a kind (ids in ``data``, ``distances``), a ``change`` (the changed item's vector now
# in ``data``, NULL when gone), this item's ``own`` vector (in ``data``), or a ``label``.
# Changed items and labels carry their crop keys (``crops``), so the answer's crop URLs cost no
# statement of their own.
# Labels fetched with the changes: the first k entries of each list and this many more (a few
# may be dropped as changed); anything else is looked up afterwards.
_LABEL_SPARE = 4


def _read_changes(
    session: Session,
    item: ItemRef,
    kinds: Sequence[str],
    applied: int,
    with_lists: bool,
    label_ids: Sequence[int] = (),
) -> _Changes:
    rows = session.execute(
        _CHANGES_SQL,
        {
            "version": item.version,
            "kinds": list(kinds),
            "applied": applied,
            "with_lists": with_lists,
            "item_id": item.id,
            "label_ids": list(label_ids),
            "crop_kinds": crop_kinds_of(kinds),
        },
    ).all()
    out = _Changes({kind: {} for kind in kinds}, {}, {}, {})
    for row in rows:
        if row.part == "list":
            out.lists[row.kind] = from_columns(row.data, row.distances, row.complete)
        elif row.part == "change":
            vector = decode(row.data) if row.data is not None else None
            out.vectors[row.kind][int(row.item_id)] = vector
            if row.sku is not None:
                out.labels[int(row.item_id)] = _label(row.sku, row.media_key, row.crops)
        elif row.part == "own":
            out.own[row.kind] = decode(row.data)
        else:
            out.labels[int(row.item_id)] = _label(row.sku, row.media_key, row.crops)
    return out


def _answer(
    item: ItemRef,
    listed: NeighbourList | None,
    changed: dict[int, np.ndarray | None],
    own: np.ndarray | None,
    k: int,
) -> list[Neighbour] | None:
    if item.id in changed or listed is None:
        return None
    ids, d2 = listed.ids, listed.sq_distances
    if changed:
        keep = ~np.isin(ids, np.fromiter(changed, dtype=np.int64, count=len(changed)))
        ids, d2 = ids[keep], d2[keep]
    if ids.size < k and not listed.complete:
        return None  # too many of its neighbours changed: only a full search can tell
    fresh = [(i, v) for i, v in changed.items() if v is not None]
    if fresh:
        if own is None:
            return None  # its own vector went away between two reads: let a worker decide
        block = np.stack([v for _, v in fresh])
        fresh_d2 = exact_squared_distances(block, own)
        ids = np.concatenate([ids, np.array([i for i, _ in fresh], dtype=np.int64)])
        d2 = np.concatenate([d2, fresh_d2])
    order = np.lexsort((ids, d2))[:k]
    return [
        Neighbour(int(i), float(np.sqrt(x))) for i, x in zip(ids[order], d2[order], strict=True)
    ]


@dataclass(frozen=True)
class ItemAnswer:
    """Per kind the item has: its neighbours, or None where a worker must search."""

    neighbours: dict[str, list[Neighbour] | None]
    labels: dict[int, Label]  # SKU and image of (at least most of) the neighbours


def item_neighbours(
    session: Session,
    cache: redis.Redis | None,
    generation: str | None,
    item: ItemRef,
    kinds: Sequence[str],
    k: int,
    on_cache_error: Callable[[Exception], None] | None = None,
) -> ItemAnswer:
    """The k nearest other items per kind the item has, and the labels read on the way."""
    kinds = [kind for kind in kinds if kind in item.kinds]
    if not kinds or item.version is None:
        return ItemAnswer({}, {})
    cached: lists_cache.CachedLists | None = None
    if cache is not None and generation is not None:
        try:
            cached = lists_cache.read_item_lists(cache, generation, item.version, item.id, kinds)
        except redis.RedisError as exc:
            if on_cache_error is not None:
                on_cache_error(exc)
            else:
                log.warning("lists cache unreadable; reading PostgreSQL", extra={"error": str(exc)})
    if cached is not None and all(cached.lists[kind] is not None for kind in kinds):
        lists = {kind: cached.lists[kind] for kind in kinds}
        label_ids = {
            int(i)
            for value in lists.values()
            if value is not None
            for i in value.ids[: k + _LABEL_SPARE]
        }
        changes = _read_changes(
            session, item, kinds, cached.applied, with_lists=False, label_ids=sorted(label_ids)
        )
    else:
        changes = _read_changes(session, item, kinds, _NO_FOLD, with_lists=True)
        lists = {kind: changes.lists.get(kind) for kind in kinds}
    neighbours = {
        kind: _answer(item, lists[kind], changes.vectors[kind], changes.own.get(kind), k)
        for kind in kinds
    }
    return ItemAnswer(neighbours, changes.labels)


def crop_kinds_of(kinds: Sequence[str]) -> list[str]:
    """The kinds among ``kinds`` whose hits show a crop (top, bottom; never the whole photo)."""
    return [kind for kind in kinds if kind in CROP_KINDS]


def labels(
    session: Session,
    item_ids: Sequence[int],
    known: dict[int, Label] | None = None,
    *,
    version: str | None = None,
    crop_kinds: Sequence[str] = (),
) -> dict[int, Label]:
    """SKU, image and (in ``version``, of ``crop_kinds``) crop keys of each item still in the
    catalogue, in one statement (``known`` ones are not read again)."""
    known = known or {}
    item_ids = [i for i in item_ids if i not in known]
    if not item_ids:
        return dict(known)
    rows = session.execute(
        text(
            f"SELECT i.id, i.sku, i.media_key, {_LABEL_CROPS} AS crops FROM items i"  # noqa: S608
            " WHERE i.id = ANY(:ids)"
        ),
        {"ids": list(set(item_ids)), "version": version, "crop_kinds": list(crop_kinds)},
    ).all()
    return {**known, **{int(r.id): _label(r.sku, r.media_key, r.crops) for r in rows}}
