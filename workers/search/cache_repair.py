"""The lists cache repairs itself: lists pages found missing are written back, and a generation
left behind a fold is brought up to date, without waiting for the next change.

Run by ``workers.tasks.lists.repair_cache`` with the fold lock held, so no fold or reload moves
PostgreSQL or the cache meanwhile. First the live generation is brought to the newest fold
(workers.search.cache_writer.heal: caught up in one MULTI, or reloaded); then the lists product
pages noted missing (shared.search.scheduling.note_missing_lists: evicted keys) are copied from
``neighbour_lists`` into it. Both sides then hold the newest fold's lists, so a copied list is
consistent with the generation's ``applied``, which is what readers correct lists against; each
copy checks the pointer and ``applied`` in the same Lua call that writes
(shared.search.lists_cache.write_back), so a flush meanwhile writes nothing.
Repeating a repair writes the same values again: it is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.redis_clients import redis_client
from shared.search import lists_cache, scheduling
from shared.search.lists import from_columns
from shared.search.loader import PgConnection, one_row
from workers.search import cache_writer

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

# Noted misses taken (and lists copied) per round; a repair drains at most the set's bound.
BATCH_LISTS = 1000
_MAX_ROUNDS = -(-scheduling.MAX_MISSING_LISTS // BATCH_LISTS)

_ROWS_SQL = """
    SELECT n.model_version, n.kind, n.item_id, n.neighbour_ids, n.sq_distances, n.complete
      FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS m(model_version, kind, item_id)
      JOIN neighbour_lists n USING (model_version, kind, item_id)
"""


@dataclass
class RepairReport:
    cache: str = "unchanged"  # unchanged | caught_up | reloaded | reload requested
    noted: int = 0  # misses taken from the set
    written: int = 0  # lists written back
    generation: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "noted": self.noted,
            "written": self.written,
            "generation": self.generation,
        }


def _latest_fold(conn: PgConnection) -> int:
    return int(one_row(conn.execute("SELECT coalesce(max(id), 0) FROM list_folds"))[0])


def _stored(
    conn: PgConnection, generation: str, missing: Sequence[scheduling.MissingList]
) -> dict[str, bytes]:
    """The lists PostgreSQL holds for ``missing`` (gone since: left out), as cache values."""
    rows = conn.execute(
        _ROWS_SQL,
        (
            [m.version for m in missing],
            [m.kind for m in missing],
            [m.item_id for m in missing],
        ),
    ).fetchall()
    return {
        lists_cache.list_key(generation, version, kind, int(item_id)): from_columns(
            ids, d2, complete
        ).to_bytes()
        for version, kind, item_id, ids, d2, complete in rows
    }


def repair(conn: PgConnection, settings: Settings) -> RepairReport:
    """Bring the cache to the newest fold, then write back the lists noted missing (fold lock
    held on ``conn``). A cache with no generation at all gets the single-flight reload the web
    asks for too (shared.search.scheduling.request_cache_reload), not a second one."""
    client = redis_client(settings.redis_cache_url)
    report = RepairReport()
    latest = _latest_fold(conn)
    report.generation = lists_cache.read_pointer(client)
    if report.generation is None:
        scheduling.request_cache_reload(settings, reason="cache empty")
        report.cache = "reload requested"
        return report
    report.cache = cache_writer.heal(conn, settings, client, latest)
    report.generation = lists_cache.read_pointer(client)
    for _ in range(_MAX_ROUNDS):
        missing = scheduling.take_missing_lists(settings, BATCH_LISTS)
        if not missing:
            break
        report.noted += len(missing)
        if report.cache == "reloaded" or report.generation is None:
            continue  # a fresh generation holds every list: the misses are only drained
        values = _stored(conn, report.generation, missing)
        if not lists_cache.write_back(client, report.generation, latest, values):
            log.warning("lists cache moved during a repair", extra=report.as_dict())
            break
        report.written += len(values)
    if report.cache != "unchanged" or report.noted:
        log.info("lists cache repaired", extra=report.as_dict())
    return report
