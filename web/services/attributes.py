"""Attribute updates without re-embedding: RFC 7396 JSON merge patches of ``items.attributes``.

A stock feed patches thousands of items at once: one statement reads (and locks, in id order,
so two feeds cannot deadlock) every named item's attributes, the patches are merged here, and
one statement writes them all back. No photo is fetched and no vector or neighbour list
changes: the lists hold distances, and filters read the attributes PostgreSQL holds at the
moment of each request, so answers follow at once.

Stored numbers are read as exact decimals and written back as they were, so a patch of one key
never rounds another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from shared.db import int8_array, text_array
from web.resources import db
from web.services.errors import NotFound

log = logging.getLogger(__name__)

MAX_PATCH_ITEMS = 10_000


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: an object patch merges key by key (null removes the key), anything else
    replaces the target whole."""
    if not isinstance(patch, Mapping):
        return patch
    merged: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def to_json(value: Any) -> str:
    """JSON text of a parsed value, exact decimals written as they were read."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value, allow_nan=False)


@dataclass(frozen=True)
class PatchOutcome:
    sku: str
    status: str  # "updated" or "not_found"


# Parameters travel as one literal or one JSON document each: psycopg dumps a Python list
# element by element, which for a 10,000-item feed cost more than the statements themselves.
_LOCK = text(
    "SELECT id, sku FROM items WHERE sku = ANY(CAST(:skus AS text[])) ORDER BY id FOR UPDATE"
)
_READ = text(
    "SELECT id, sku, CAST(attributes AS text) AS attributes FROM items"
    " WHERE id = ANY(CAST(:ids AS bigint[]))"
)
# A flat patch (no object values, its SKU named once) is done by PostgreSQL itself: remove the
# keys set to null, then set the others; stored values never pass through Python.
_WRITE_FLAT = text(
    "UPDATE items AS i SET updated_at = now(),"
    " attributes = (i.attributes - ARRAY(SELECT jsonb_array_elements_text(v.removed))) || v.kept"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id bigint, removed jsonb, kept jsonb)"
    " WHERE i.id = v.id"
)
_WRITE = text(
    "UPDATE items AS i SET attributes = CAST(v.attributes AS jsonb), updated_at = now()"
    " FROM (SELECT unnest(CAST(:ids AS bigint[])) AS id,"
    " unnest(CAST(:attributes AS text[])) AS attributes) AS v"
    " WHERE i.id = v.id"
)


def _flat(patch: Mapping[str, Any]) -> bool:
    return not any(isinstance(value, Mapping) for value in patch.values())


def patch_attributes(patches: Sequence[tuple[str, Mapping[str, Any]]]) -> list[PatchOutcome]:
    """Apply each (SKU, merge patch) in order (a SKU named twice gets both, in turn), in one
    transaction; an unknown SKU is reported and the rest applied."""
    session = db()
    ids: dict[str, int] = {
        r.sku: int(r.id)
        for r in session.execute(_LOCK, {"skus": text_array(sorted({sku for sku, _ in patches}))})
    }
    named: dict[str, list[Mapping[str, Any]]] = {}
    for sku, patch in patches:
        if sku in ids:
            named.setdefault(sku, []).append(patch)
    flat = {sku: p[0] for sku, p in named.items() if len(p) == 1 and _flat(p[0])}
    if flat:
        rows = [
            {
                "id": ids[sku],
                "removed": [k for k, v in p.items() if v is None],
                "kept": {k: v for k, v in p.items() if v is not None},
            }
            for sku, p in flat.items()
        ]
        session.execute(_WRITE_FLAT, {"rows": json.dumps(rows, allow_nan=False)})
    deep = [sku for sku in named if sku not in flat]
    if deep:
        read = session.execute(_READ, {"ids": int8_array(ids[sku] for sku in deep)}).all()
        merged: dict[int, Any] = {}
        for r in read:
            attributes = json.loads(r.attributes, parse_float=Decimal)
            for patch in named[r.sku]:
                attributes = merge_patch(attributes, patch)
            merged[int(r.id)] = attributes
        session.execute(
            _WRITE,
            {
                "ids": int8_array(merged),
                "attributes": text_array(to_json(v) for v in merged.values()),
            },
        )
    session.commit()
    outcomes = [PatchOutcome(sku, "updated" if sku in ids else "not_found") for sku, _ in patches]
    log.info(
        "attributes patched",
        extra={"items": len(named), "not_found": len(patches) - sum(map(len, named.values()))},
    )
    return outcomes


def patch_item_attributes(sku: str, patch: Mapping[str, Any]) -> None:
    """Merge-patch one item's attributes; NotFound for an unknown SKU."""
    if patch_attributes([(sku, patch)])[0].status != "updated":
        raise NotFound("item_not_found", f"No item has the SKU {sku!r}.")
