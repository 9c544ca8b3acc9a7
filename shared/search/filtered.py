"""A product page with filters: the item's corrected lists walked nearest first.

Each corrected list (shared.search.reader.Prefix) is an exact prefix of the order over every
other item, so the first k of its entries that pass the filters and the families are the exact
answer, whatever the filter. The entries' attributes are read in one indexed query (every kind's
entries and the item itself, whose value ``exclude_same`` needs). A walk that runs out before k
in a list that does not hold every item cannot tell what lies beyond it: that kind is left to a
``query`` worker (None), which searches its matrix restricted to the items that pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from shared.db import driver_rows, int8_array
from shared.search.filters import FamilyPicker, FilterSpec, Key, key_of_text, key_sql, predicate
from shared.search.reader import ItemRef, Neighbour, Prefix

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _read_attributes(
    session: Session, spec: FilterSpec, item_ids: list[int]
) -> dict[int, tuple[bool, Key | None, Key | None]]:
    """Per item still in the catalogue: passes the conditions, its distinct and same keys."""
    where = predicate(spec, "attributes", "pyformat")
    columns = [f"{where.sql} AS ok"]
    params: dict[str, object] = {**where.params, "ids": int8_array(item_ids)}
    for label, name in (("dkey", spec.distinct), ("skey", spec.exclude_same)):
        if name is None:
            columns.append(f"NULL AS {label}")
            continue
        sql, extra = key_sql("attributes", name, f"fam_{label}", "pyformat")
        columns.append(f"{sql} AS {label}")
        params.update(extra)
    # Only placeholders and operators are spliced in (shared.search.filters.predicate).
    sql = f"SELECT id, {', '.join(columns)} FROM items WHERE id = ANY(CAST(%(ids)s AS bigint[]))"  # noqa: S608
    rows = driver_rows(session, sql, params)
    return {int(r.id): (bool(r.ok), key_of_text(r.dkey), key_of_text(r.skey)) for r in rows}


def walk(
    session: Session,
    item: ItemRef,
    prefixes: Mapping[str, Prefix | None],
    spec: FilterSpec,
    k: int,
) -> dict[str, list[Neighbour] | None]:
    """Per kind: the k nearest items that pass, or None where only a worker can tell."""
    ready = {kind: p for kind, p in prefixes.items() if p is not None}
    out: dict[str, list[Neighbour] | None] = {kind: None for kind in prefixes}
    if not ready:
        return out
    wanted = {item.id}
    for prefix in ready.values():
        wanted.update(int(i) for i in prefix.ids)
    known = _read_attributes(session, spec, sorted(wanted))
    own = known.get(item.id)
    own_key = own[2] if own is not None else None
    for kind, prefix in ready.items():
        picker = FamilyPicker(spec, own_key)
        found: list[Neighbour] = []
        for item_id, d2 in zip(prefix.ids.tolist(), prefix.sq_distances.tolist(), strict=True):
            row = known.get(item_id)
            # An entry deleted since the lists were read is simply not in the catalogue now.
            if row is None or not row[0] or not picker.offer(row[1], row[2]):
                continue
            found.append(Neighbour(item_id, float(np.sqrt(d2))))
            if len(found) == k:
                break
        if len(found) == k or prefix.complete:
            out[kind] = found
    return out
