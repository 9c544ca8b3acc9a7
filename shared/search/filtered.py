"""A product page with filters: the item's corrected lists walked nearest first.

Each corrected list (shared.search.reader.Prefix) is an exact prefix of the order over every
other item, so the first k of its entries that pass the filters and the families are the exact
answer, whatever the filter. The entries' attributes are read in slices, nearest first, every
kind's slice (and, the first time, the item itself, whose value ``exclude_same`` needs) in one
indexed query: the first slice is sized for a filter half the items pass, each next one from
the share that passed so far, so a broad filter reads a few dozen entries instead of every
list's. Family values are decoded only for entries that pass. A walk that runs out before k in
a list that does not hold every item cannot tell what lies beyond it: that kind is left to a
``query`` worker (None), which searches its matrix restricted to the items that pass; so is a
kind whose unread rest cannot hold the hits still needed at the pass rate seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.db import driver_rows, int8_array
from shared.search.filters import FamilyPicker, FilterSpec, key_of_text, key_sql, predicate
from shared.search.reader import ItemRef, Neighbour, Prefix

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# The first slice reads this many entries per wanted hit: a filter half the items pass finds
# its k there in one statement nearly always (at 2 per hit, only about half the time).
_FIRST_SLICE_PER_K = 4
# A later slice is at least this many times the entries walked so far: few round trips even
# when the pass rate seen so far is a poor guess.
_GROWTH = 2
# Margin over the entries the pass rate says are needed.
_MARGIN = 1.5

# Per item: passes the conditions, its distinct and same values as jsonb text (None: absent).
Row = tuple[bool, str | None, str | None]


def _read_attributes(session: Session, spec: FilterSpec, item_ids: list[int]) -> dict[int, Row]:
    """Per item still in the catalogue: passes the conditions, its distinct and same values."""
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
    return {int(r.id): (bool(r.ok), r.dkey, r.skey) for r in rows}


@dataclass
class _KindWalk:
    """One kind's list, walked nearest first across slices."""

    ids: list[int]
    sq_distances: list[float]
    complete: bool
    picker: FamilyPicker
    walked: int = 0
    wanted: int = 0  # entries whose attributes are (being) read
    found: list[Neighbour] = field(default_factory=list)

    def done(self, k: int) -> bool:
        return len(self.found) >= k or self.walked >= len(self.ids) or self.hopeless(k)

    def hopeless(self, k: int) -> bool:
        """The rest of a list that does not hold every item cannot give the hits still needed
        even at a pass rate above the one seen ((found + 1) / walked): a worker will answer, so
        its attributes are not read at all (a 1% filter reads one slice, not every entry)."""
        if self.complete or self.walked == 0:
            return False
        rest = len(self.ids) - self.walked
        return rest * (len(self.found) + 1) < (k - len(self.found)) * self.walked

    def next_slice(self, k: int) -> None:
        """Read up to the entries the pass rate so far says hold the hits still needed."""
        if self.walked == 0:
            more = _FIRST_SLICE_PER_K * k
        elif not self.found:
            more = len(self.ids)
        else:
            needed = math.ceil((k - len(self.found)) * self.walked / len(self.found) * _MARGIN)
            more = max(needed, _GROWTH * self.walked)
        self.wanted = min(len(self.ids), self.walked + more)

    def walk(self, known: Mapping[int, Row | None], k: int) -> None:
        while self.walked < self.wanted and len(self.found) < k:
            item_id = self.ids[self.walked]
            row = known.get(item_id)
            self.walked += 1
            # An entry deleted since the lists were read is simply not in the catalogue now.
            if row is None or not row[0]:
                continue
            if self.picker.offer(key_of_text(row[1]), key_of_text(row[2])):
                self.found.append(Neighbour(item_id, math.sqrt(self.sq_distances[self.walked - 1])))


def _read_known(session: Session, spec: FilterSpec, item_ids: set[int]) -> dict[int, Row | None]:
    read = _read_attributes(session, spec, sorted(item_ids))
    return {i: read.get(i) for i in item_ids}


def walk(
    session: Session,
    item: ItemRef,
    prefixes: Mapping[str, Prefix | None],
    spec: FilterSpec,
    k: int,
) -> dict[str, list[Neighbour] | None]:
    """Per kind: the k nearest items that pass, or None where only a worker can tell."""
    out: dict[str, list[Neighbour] | None] = {kind: None for kind in prefixes}
    walks = {
        kind: _KindWalk(
            p.ids.tolist(), p.sq_distances.tolist(), p.complete, FamilyPicker(spec, None)
        )
        for kind, p in prefixes.items()
        if p is not None
    }
    if not walks:
        return out
    ask = {item.id}
    for w in walks.values():
        w.next_slice(k)
        ask.update(w.ids[: w.wanted])
    known = _read_known(session, spec, ask)
    own_row = known.get(item.id)
    for w in walks.values():
        w.picker.own = key_of_text(own_row[2]) if own_row is not None else None
    pending = list(walks.values())
    while pending:
        for w in pending:
            w.walk(known, k)
        pending = [w for w in pending if not w.done(k)]
        ask = set()
        for w in pending:
            w.next_slice(k)
            ask.update(i for i in w.ids[w.walked : w.wanted] if i not in known)
        if ask:
            known.update(_read_known(session, spec, ask))
    for kind, w in walks.items():
        if len(w.found) == k or (w.complete and w.walked == len(w.ids)):
            out[kind] = w.found
    return out
