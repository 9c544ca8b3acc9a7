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
PostgreSQL in one statement (one snapshot), with the same rules, and the caller hears of the
keys the cache lacked (the web notes them for a repair that writes them back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from shared.db import driver_rows as _rows
from shared.db import int8_array
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
    sku: str
    media_key: str | None


@dataclass
class Shown:
    """What an answer shows of its hits: each item's label, and the crop of each top or bottom
    hit in the answer's model version, by (kind, item id) (None: it has none)."""

    labels: dict[int, Label] = field(default_factory=dict)
    crops: dict[tuple[str, int], str | None] = field(default_factory=dict)


def find_item(session: Session, sku: str) -> ItemRef | None:
    rows = _rows(
        session,
        (
            "SELECT i.id, i.status, i.error, e.model_version, e.kind, e.id AS embedding_id,"
            " (SELECT version FROM model_serving WHERE id = 1) AS serving_version,"
            " (SELECT model_version FROM embeddings ORDER BY id DESC LIMIT 1) AS newest_version"
            " FROM items i LEFT JOIN embeddings e ON e.item_id = i.id WHERE i.sku = %(sku)s"
        ),
        {"sku": sku},
    )
    if not rows:
        return None
    first = rows[0]
    embedded = [r for r in rows if r.kind is not None]
    # The serving version answers (read in this statement: a switch shows on the next page).
    # An item it has no vectors of yet is not embedded as far as the page is concerned. With no
    # version serving yet (vectors written by hand, as tests and benchmarks do): the
    # catalogue's newest vector's version when the item has it, else the item's newest.
    if first.serving_version is not None:
        version = first.serving_version
    elif first.newest_version in {r.model_version for r in embedded}:
        version = first.newest_version
    else:
        version = max(embedded, key=lambda r: r.embedding_id).model_version if embedded else None
    kinds = frozenset(r.kind for r in embedded if r.model_version == version)
    if not kinds:
        version = None
    return ItemRef(first.id, sku, first.status, first.error, version, kinds)


@dataclass
class _Changes:
    """Per kind: changed item id -> its vector now (None: it has none any more)."""

    vectors: dict[str, dict[int, np.ndarray | None]]
    own: dict[str, np.ndarray]
    lists: dict[str, NeighbourList]
    shown: Shown


_CROP_KINDS = [kind.value for kind in CROP_KINDS]

# Rows with the SKU and photo of items (``label``) and the crop key of (kind, item) pairs
# (``crop``): one index probe per item, and per pair that is a top or bottom hit (never both
# kinds of every item). Spliced into the queries below (their noqa: S608): constants, every value
# in them a bound parameter.
_SHOWN_PARTS = """
    SELECT 'label' AS part, NULL AS kind, i.id AS item_id, NULL::bytea AS data,
           NULL::bytea AS distances, NULL::boolean AS complete, i.sku, i.media_key,
           NULL AS crop_key
      FROM items i WHERE i.id = ANY(CAST(%(label_ids)s AS bigint[]))""" + "".join(  # noqa: S608
    f"""
    UNION ALL
    SELECT 'crop', c.kind, c.item_id, NULL, NULL, NULL, NULL, NULL, c.crop_key
      FROM embeddings c
     WHERE c.model_version = %(version)s AND c.kind = '{kind}'
       AND c.item_id = ANY(CAST(%(crop_ids_{kind})s AS bigint[]))
       AND c.crop_key IS NOT NULL"""  # noqa: S608
    for kind in _CROP_KINDS
)

_CHANGES_SQL = f"""
    WITH ch AS (
        SELECT DISTINCT item_id, kind FROM list_changes
         WHERE model_version = %(version)s AND kind = ANY(%(kinds)s)
           AND (fold_id IS NULL OR fold_id > %(applied)s)
    )
    SELECT 'list' AS part, kind, NULL::bigint AS item_id, neighbour_ids AS data,
           sq_distances AS distances, complete, NULL AS sku, NULL AS media_key,
           NULL AS crop_key
      FROM neighbour_lists
     WHERE %(with_lists)s AND model_version = %(version)s AND item_id = %(item_id)s
       AND kind = ANY(%(kinds)s)
    UNION ALL
    SELECT 'change', ch.kind, ch.item_id, e.vector, NULL, NULL, i.sku, i.media_key, e.crop_key
      FROM ch LEFT JOIN embeddings e
        ON e.item_id = ch.item_id AND e.model_version = %(version)s AND e.kind = ch.kind
      LEFT JOIN items i ON i.id = ch.item_id
    UNION ALL
    SELECT 'own', e.kind, e.item_id, e.vector, NULL, NULL, NULL, NULL, NULL
      FROM embeddings e
     WHERE e.item_id = %(item_id)s AND e.model_version = %(version)s AND e.kind = ANY(%(kinds)s)
       AND EXISTS (SELECT 1 FROM ch)
    UNION ALL
    {_SHOWN_PARTS}
    """  # noqa: S608
# One statement, so one snapshot; each row's ``part`` says what it is: this item's stored
# ``list`` of a kind (ids in ``data``, ``distances``), a ``change`` (the changed item's vector now
# in ``data``, NULL when gone, and its crop of that kind), this item's ``own`` vector (in
# ``data``), a ``label`` or a ``crop``: the answer's crop URLs cost no statement of their own.
# Labels fetched with the changes: the first k entries of each list and this many more (a few
# may be dropped as changed); anything else is looked up afterwards.
_LABEL_SPARE = 4


def _shown_params(
    version: str | None, label_ids: Sequence[int], crop_ids: Mapping[str, Sequence[int]]
) -> dict[str, Any]:
    params: dict[str, Any] = {"version": version, "label_ids": int8_array(label_ids)}
    for kind in _CROP_KINDS:
        params[f"crop_ids_{kind}"] = int8_array(crop_ids.get(kind, ()))
    return params


def _read_shown(row: Any, shown: Shown) -> None:
    if row.part == "label":
        shown.labels[int(row.item_id)] = Label(row.sku, row.media_key)
    else:
        shown.crops[(row.kind, int(row.item_id))] = row.crop_key


def _asked(crop_ids: Mapping[str, Sequence[int]]) -> dict[tuple[str, int], str | None]:
    """Every pair asked for, without a crop until a row says otherwise."""
    return {(kind, int(i)): None for kind, ids in crop_ids.items() for i in ids}


def _read_changes(
    session: Session,
    item: ItemRef,
    kinds: Sequence[str],
    applied: int,
    with_lists: bool,
    label_ids: Sequence[int] = (),
    crop_ids: Mapping[str, Sequence[int]] | None = None,
) -> _Changes:
    crop_ids = crop_ids or {}
    rows = _rows(
        session,
        _CHANGES_SQL,
        {
            "kinds": list(kinds),
            "applied": applied,
            "with_lists": with_lists,
            "item_id": item.id,
            **_shown_params(item.version, label_ids, crop_ids),
        },
    )
    out = _Changes({kind: {} for kind in kinds}, {}, {}, Shown(crops=_asked(crop_ids)))
    for row in rows:
        if row.part == "list":
            out.lists[row.kind] = from_columns(row.data, row.distances, row.complete)
        elif row.part == "change":
            item_id = int(row.item_id)
            out.vectors[row.kind][item_id] = decode(row.data) if row.data is not None else None
            if row.sku is not None:
                out.shown.labels[item_id] = Label(row.sku, row.media_key)
            if row.data is not None and row.kind in _CROP_KINDS:
                out.shown.crops[(row.kind, item_id)] = row.crop_key
        elif row.part == "own":
            out.own[row.kind] = decode(row.data)
        else:
            _read_shown(row, out.shown)
    return out


@dataclass(frozen=True)
class Prefix:
    """An item's corrected list: an exact prefix of the order (distance, then item id) over
    every other item PostgreSQL holds now; ``complete``: it holds all of them."""

    ids: np.ndarray  # int64
    sq_distances: np.ndarray  # float64
    complete: bool


def _exact_prefix(
    item: ItemRef,
    listed: NeighbourList | None,
    changed: dict[int, np.ndarray | None],
    own: np.ndarray | None,
) -> Prefix | None:
    if item.id in changed or listed is None:
        return None
    ids, d2 = listed.ids, listed.sq_distances
    if changed:
        keep = ~np.isin(ids, np.fromiter(changed, dtype=np.int64, count=len(changed)))
        ids, d2 = ids[keep], d2[keep]
    kept = ids.size
    fresh = [(i, v) for i, v in changed.items() if v is not None]
    if fresh:
        if own is None:
            return None  # its own vector went away between two reads: let a worker decide
        block = np.stack([v for _, v in fresh])
        fresh_d2 = exact_squared_distances(block, own)
        ids = np.concatenate([ids, np.array([i for i, _ in fresh], dtype=np.int64)])
        d2 = np.concatenate([d2, fresh_d2])
    order = np.lexsort((ids, d2))
    ids, d2 = ids[order], d2[order]
    if not listed.complete and fresh:
        # The kept entries cover every unchanged item up to the last of them; a changed item
        # beyond it may have unlisted unchanged items in front of it: cut there.
        if kept == 0:
            return Prefix(ids[:0], d2[:0], False)
        last_kept = int(np.flatnonzero(order < kept).max())
        ids, d2 = ids[: last_kept + 1], d2[: last_kept + 1]
    return Prefix(ids, d2, listed.complete)


def _answer(prefix: Prefix | None, k: int) -> list[Neighbour] | None:
    if prefix is None:
        return None
    if prefix.ids.size < k and not prefix.complete:
        return None  # too many of its neighbours changed: only a full search can tell
    return [
        Neighbour(int(i), float(np.sqrt(x)))
        for i, x in zip(prefix.ids[:k], prefix.sq_distances[:k], strict=True)
    ]


@dataclass(frozen=True)
class ItemAnswer:
    """Per kind the item has: its neighbours, or None where a worker must search."""

    neighbours: dict[str, list[Neighbour] | None]
    shown: Shown  # labels and crops of (at least most of) the neighbours
    # Per kind: the whole corrected list (what filters walk), None where a worker must search.
    prefixes: dict[str, Prefix | None]
    # The cache generation every list came from; None when they were read from PostgreSQL.
    generation: str | None = None


def _read_cached(
    cache: redis.Redis | None,
    generation: str | None,
    item: ItemRef,
    kinds: Sequence[str],
    on_cache_error: Callable[[Exception], None] | None,
) -> tuple[lists_cache.CachedLists | None, bool]:
    """The item's lists in ``generation``, and whether the cache answered at all."""
    if cache is None or generation is None or item.version is None:
        return None, False
    try:
        return lists_cache.read_item_lists(cache, generation, item.version, item.id, kinds), True
    except redis.RedisError as exc:
        if on_cache_error is not None:
            on_cache_error(exc)
        else:
            log.warning("lists cache unreadable; reading PostgreSQL", extra={"error": str(exc)})
        return None, False


def _from_cache(
    session: Session, item: ItemRef, kinds: Sequence[str], cached: lists_cache.CachedLists, k: int
) -> tuple[dict[str, NeighbourList | None], _Changes]:
    lists = {kind: cached.lists[kind] for kind in kinds}
    heads = {
        kind: [int(i) for i in value.ids[: k + _LABEL_SPARE]]
        for kind, value in lists.items()
        if value is not None
    }
    changes = _read_changes(
        session,
        item,
        kinds,
        cached.applied,
        with_lists=False,
        label_ids=sorted({i for ids in heads.values() for i in ids}),
        crop_ids={kind: ids for kind, ids in heads.items() if kind in _CROP_KINDS},
    )
    return lists, changes


def item_neighbours(
    session: Session,
    cache: redis.Redis | None,
    generation: str | None,
    item: ItemRef,
    kinds: Sequence[str],
    k: int,
    on_cache_error: Callable[[Exception], None] | None = None,
    on_cache_miss: Callable[[ItemRef, list[str]], None] | None = None,
) -> ItemAnswer:
    """The k nearest other items per kind the item has, and the labels and crops read on the
    way.

    ``on_cache_miss`` hears of the kinds whose list the cache answered without (evicted, or a
    generation gone) while PostgreSQL has it: what a repair can write back."""
    kinds = [kind for kind in kinds if kind in item.kinds]
    if not kinds or item.version is None:
        return ItemAnswer({}, Shown(), {})
    cached, answered = _read_cached(cache, generation, item, kinds, on_cache_error)
    source: str | None = None
    if cached is not None and all(cached.lists[kind] is not None for kind in kinds):
        lists, changes = _from_cache(session, item, kinds, cached, k)
        source = generation
    else:
        changes = _read_changes(session, item, kinds, _NO_FOLD, with_lists=True)
        lists = {kind: changes.lists.get(kind) for kind in kinds}
        missed = [
            kind
            for kind in kinds
            if kind in changes.lists and (cached is None or cached.lists[kind] is None)
        ]
        if answered and missed and on_cache_miss is not None:
            on_cache_miss(item, missed)
    prefixes = {
        kind: _exact_prefix(item, lists[kind], changes.vectors[kind], changes.own.get(kind))
        for kind in kinds
    }
    neighbours = {kind: _answer(prefixes[kind], k) for kind in kinds}
    return ItemAnswer(neighbours, changes.shown, prefixes, source)


def shown(
    session: Session,
    version: str | None,
    hits: Mapping[str, Sequence[int]],
    known: Shown | None = None,
) -> Shown:
    """Label of every item in ``hits`` (kind -> item ids) still in the catalogue, and the crop
    in ``version`` of every top and bottom hit, in one statement; what ``known`` holds is not
    read again."""
    known = known or Shown()
    label_ids = sorted({i for ids in hits.values() for i in ids} - known.labels.keys())
    crop_ids = {
        kind: sorted({i for i in ids if (kind, i) not in known.crops})
        for kind, ids in hits.items()
        if kind in _CROP_KINDS
    }
    if not label_ids and not any(crop_ids.values()):
        return known
    out = Shown(dict(known.labels), {**known.crops, **_asked(crop_ids)})
    for row in _rows(session, _SHOWN_PARTS, _shown_params(version, label_ids, crop_ids)):
        _read_shown(row, out)
    return out
