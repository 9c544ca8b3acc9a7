"""Folding the change log into the neighbour lists, exactly, in one pass over each matrix.

One fold at a time across every worker (a PostgreSQL advisory lock), so concurrent batches
never lose each other's updates. Inside one REPEATABLE READ snapshot (the lock, the snapshot and
this process's index lock are :func:`fold_transaction`) a fold:

1. takes every change no fold took in yet (``list_changes.fold_id IS NULL``) and brings the
   matrices of the kinds they touch up to that snapshot (workers.search.index);
2. strips every changed item out of every list it was in (a list minus some items is still an
   exact prefix of the order over the rest);
3. puts each changed item that still has a vector into every list it now belongs to: one matrix
   product of the changed vectors against the matrix (O(N x changes x d)), float32 estimates
   screened against each list's last distance with the proven error margin, exact float64
   distances for the pairs that pass;
4. recomputes from scratch the lists of changed items, and of items whose list lost more than
   its slack (workers.search.kernels.nearest_rows): with no lists at all this *is* the full
   computation, blocked;
5. writes the lists it changed and marks the changes with its id, then commits.

Steps 2-4 are the rules of the lists themselves (workers.search.neighbour_lists.NeighbourLists,
one per matrix); this module runs them over the pending changes, block after block, and does
the PostgreSQL side.

After the commit it updates the Redis cache in one MULTI (lists + the fold id), or reloads a
whole generation when the cache is cold or behind (workers.search.cache_writer), and purges
change rows older than the retention that the cache no longer needs.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from shared.locks import FOLD_LOCK_KEY
from shared.search import lists_cache
from shared.search.lists import from_columns
from shared.search.loader import PgConnection, libpq_url, one_row
from workers.search import cache_writer
from workers.search.index import KindMatrix, VectorIndex, get_index
from workers.search.neighbour_lists import Estimates

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)


@dataclass
class FoldReport:
    fold_id: int | None = None
    changes: int = 0
    lists_written: int = 0
    lists_removed: int = 0
    recomputed: int = 0
    # Lists read from PostgreSQL before folding: all of a kind at first, then only the ones
    # other processes' folds wrote since this process's last fold.
    lists_read: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    cache: str = "unchanged"  # applied | reloaded | unavailable | unchanged
    kinds: dict[str, int] = field(default_factory=dict)
    # Where the time went: matrices brought up to date, PostgreSQL writes and commit, Redis.
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fold_id": self.fold_id,
            "changes": self.changes,
            "lists_written": self.lists_written,
            "lists_removed": self.lists_removed,
            "recomputed": self.recomputed,
            "lists_read": self.lists_read,
            "seconds": round(self.seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "cache": self.cache,
            "kinds": self.kinds,
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
        }


class FoldLockBusy(Exception):
    """Another process holds the fold lock: try again later rather than wait for it."""


class advisory_lock:
    """The fold lock, held on its own autocommit connection until released.

    Taken without waiting (``pg_try_advisory_lock``): a worker never sits behind another's
    fold, it raises :class:`FoldLockBusy` and its task sends the work again a little later.
    """

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def __enter__(self) -> PgConnection:
        taken = one_row(self.conn.execute("SELECT pg_try_advisory_lock(%s)", (FOLD_LOCK_KEY,)))[0]
        if not taken:
            raise FoldLockBusy("another process holds the fold lock")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (FOLD_LOCK_KEY,))
        except psycopg.Error:
            log.warning("could not release the fold lock; it goes with the connection")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def connect(settings: Settings) -> PgConnection:
    """A worker's autocommit connection, with keepalives and timeouts (shared.config)."""
    alive = (
        settings.db_keepalives_idle_s,
        settings.db_keepalives_interval_s,
        settings.db_keepalives_count,
    )
    # The server's side of the keepalives too: it is the server that frees a lost holder's lock.
    options = " ".join(
        f"-c {name}={value}"
        for name, value in (
            ("tcp_keepalives_idle", alive[0]),
            ("tcp_keepalives_interval", alive[1]),
            ("tcp_keepalives_count", alive[2]),
            ("lock_timeout", _ms(settings.db_lock_timeout_s)),
            ("statement_timeout", _ms(settings.db_statement_timeout_s)),
            ("idle_in_transaction_session_timeout", _ms(settings.db_idle_in_transaction_timeout_s)),
        )
    )
    return psycopg.connect(
        libpq_url(settings.database_url),
        autocommit=True,
        keepalives=1,
        keepalives_idle=alive[0],
        keepalives_interval=alive[1],
        keepalives_count=alive[2],
        options=options,
    )


# --------------------------------------------------------------------------- the lock and snapshot


class FoldTransaction:
    """A fold's open REPEATABLE READ transaction, on the fold lock's connection."""

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn
        self.committed = False

    def commit(self) -> float:
        """Commit the fold (or the snapshot that found nothing to fold); returns its seconds."""
        began = time.perf_counter()
        self.conn.execute("COMMIT")
        self.committed = True
        return time.perf_counter() - began

    def rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            log.warning("rollback failed; the connection is going away anyway")


@contextmanager
def fold_transaction(settings: Settings, index: VectorIndex) -> Iterator[FoldTransaction]:
    """Everything a fold holds, taken in this order: the fold lock (tried: FoldLockBusy at once
    when another process has it), this process's index lock (no search of this process reads
    the matrices while they change), and one REPEATABLE READ transaction on the lock's connection.

    The body commits; what it does after (the cache write, the purge) is still under both locks,
    so no other fold or reload slips between PostgreSQL and Redis. Leaving the block uncommitted
    rolls back and forgets this process's lists, which may be half-folded: the next fold loads
    them from PostgreSQL again.
    """
    with connect(settings) as conn, advisory_lock(conn), index.lock:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        transaction = FoldTransaction(conn)
        try:
            yield transaction
        finally:
            if not transaction.committed:
                index.invalidate_lists()
                transaction.rollback()


# --------------------------------------------------------------------------- one kind


def load_lists(conn: PgConnection, matrix: KindMatrix, through: int) -> int:
    """Bring this matrix's lists to PostgreSQL's in the current snapshot, whose newest fold is
    ``through``; returns the lists read.

    Lists at an older fold (another process folded since) read only the rows later folds wrote
    (``fold_id``): every other row's list is the same in PostgreSQL, the rows of items that left
    went with the matrix's sync, and a new or changed item's row either was written by one of
    those folds or is pending (this fold recomputes it). Lists never loaded, or newer than the
    snapshot, are read whole.
    """
    lists = matrix.lists
    if lists.fold == through:
        return 0
    sql = (
        "SELECT item_id, neighbour_ids, sq_distances, complete FROM neighbour_lists"
        " WHERE model_version = %(v)s AND kind = %(k)s"
    )
    params: dict[str, object] = {"v": matrix.version, "k": matrix.kind}
    if lists.fold is not None and lists.fold < through:
        sql += " AND fold_id > %(f)s"
        params["f"] = lists.fold
    else:
        lists.hold()
        lists.clear(slice(0, matrix.n))
    read = 0
    with conn.cursor() as cur:
        cur.execute(sql, params)
        for item_id, ids, d2, complete in cur:
            read += 1
            row = matrix.row_of.get(int(item_id))
            if row is not None:
                lists.put(row, from_columns(ids, d2, complete))
    lists.fold = through
    return read


@dataclass
class _KindFold:
    written: set[int]  # rows whose list changed
    removed: list[int]  # item ids whose list is gone
    recomputed: int


def fold_kind(
    matrix: KindMatrix, changed_ids: np.ndarray, settings: Settings, device: str = "numpy"
) -> _KindFold:
    """Steps 2-4 of the module docstring for one (version, kind); lists change in place."""
    n, lists = matrix.n, matrix.lists
    lists.hold()
    removed = [int(i) for i in changed_ids.tolist() if int(i) not in matrix.row_of]
    new_rows = np.array(
        sorted(matrix.row_of[int(i)] for i in changed_ids.tolist() if int(i) in matrix.row_of),
        dtype=np.int64,
    )
    written = lists.strip(changed_ids, n)
    recompute = np.union1d(new_rows, lists.short_rows(n)).astype(np.int64)
    rest = recompute
    # Small catalogues and first computations go straight to the blocked kernel. Otherwise the
    # changed items go in blocks of list_block_rows: one block's product (block x N) serves both
    # its insertions and its own fresh lists, and is dropped before the next block, so memory
    # does not grow with the number of changes. Inserting block after block is exact: after
    # each, every list is an exact prefix of the order over all items but the later blocks'.
    if new_rows.size and n > 1 and recompute.size < n:
        block = max(1, settings.list_block_rows)
        for start in range(0, new_rows.size, block):
            est = Estimates.of_block(matrix, new_rows[start : start + block])
            written |= lists.insert(matrix, est, recompute)
            lists.refill_estimated(matrix, est)
            del est
        rest = np.setdiff1d(recompute, new_rows)
    lists.refill(matrix, rest, settings.list_block_rows, device)
    written |= set(recompute.tolist())
    written |= lists.complete_whole(n)
    return _KindFold(written, removed, int(recompute.size))


# --------------------------------------------------------------------------- PostgreSQL


def _write_lists(conn: PgConnection, fold_id: int, updates: list[lists_cache.ListUpdate]) -> None:
    """Upsert the lists that changed and delete the ones that are gone, marked with ``fold_id``."""
    written = [(u.version, u.kind, u.item_id, u.value) for u in updates if u.value is not None]
    if written:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS fold_lists (model_version text, kind text,"
            " item_id bigint, neighbour_ids bytea, sq_distances bytea, complete boolean)"
            " ON COMMIT DELETE ROWS"
        )
        with conn.cursor() as cur, cur.copy("COPY fold_lists FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "int8", "bytea", "bytea", "bool"])
            for version, kind, item_id, value in written:
                copy.write_row(
                    (
                        version,
                        kind,
                        item_id,
                        value.id_bytes(),
                        value.distance_bytes(),
                        value.complete,
                    )
                )
        conn.execute(
            "INSERT INTO neighbour_lists AS t (model_version, kind, item_id, neighbour_ids,"
            " sq_distances, complete, fold_id)"
            " SELECT model_version, kind, item_id, neighbour_ids, sq_distances, complete, %s"
            " FROM fold_lists"
            " ON CONFLICT (model_version, kind, item_id) DO UPDATE SET"
            " neighbour_ids = excluded.neighbour_ids, sq_distances = excluded.sq_distances,"
            " complete = excluded.complete, fold_id = excluded.fold_id",
            (fold_id,),
        )
    gone: dict[tuple[str, str], list[int]] = defaultdict(list)
    for update in updates:
        if update.value is None:
            gone[update.version, update.kind].append(update.item_id)
    for (version, kind), item_ids in gone.items():
        conn.execute(
            "DELETE FROM neighbour_lists WHERE model_version = %s AND kind = %s"
            " AND item_id = ANY(%s)",
            (version, kind, item_ids),
        )


def purge_changes(conn: PgConnection, settings: Settings, keep_from: int | None) -> int:
    """Delete change rows folded longer ago than the retention and not needed by the cache.

    ``keep_from``: the fold the live cache generation includes (its readers still need every
    change after it); None when the cache could not be read, then nothing is purged.
    """
    if keep_from is None:
        return 0
    horizon = one_row(
        conn.execute(
            "SELECT coalesce(max(id), 0) FROM list_folds"
            " WHERE created_at < now() - make_interval(secs => %s) AND id <= %s",
            (settings.list_change_retention_s, keep_from),
        )
    )[0]
    if not horizon:
        return 0
    with conn.transaction():
        deleted = conn.execute("DELETE FROM list_changes WHERE fold_id <= %s", (horizon,)).rowcount
        conn.execute(
            "UPDATE list_state SET purged_through = greatest(purged_through, %s) WHERE id = 1",
            (horizon,),
        )
    return int(deleted or 0)


# --------------------------------------------------------------------------- the fold


def fold(
    settings: Settings,
    *,
    index: VectorIndex | None = None,
    device: str = "numpy",
    reason: str = "",
    model_version: str | None = None,
) -> FoldReport:
    """Fold every pending change (of ``model_version`` only, when named: a version's folds run
    on its own workers); safe to call any time, from any number of workers.

    Raises :class:`FoldLockBusy` at once, having done nothing, while another process folds."""
    index = index or get_index()
    report = FoldReport()
    started = time.perf_counter()
    with fold_transaction(settings, index) as transaction:
        conn = transaction.conn
        prev_fold = int(one_row(conn.execute("SELECT coalesce(max(id), 0) FROM list_folds"))[0])
        pending = conn.execute(
            "SELECT DISTINCT model_version, kind, item_id FROM list_changes"
            " WHERE fold_id IS NULL AND (%(v)s::text IS NULL OR model_version = %(v)s)",
            {"v": model_version},
        ).fetchall()
        updates = _fold_pending(
            conn, settings, index, device, prev_fold, pending, report, model_version
        )
        commit_seconds = transaction.commit()
        if report.fold_id is not None:
            report.phases["commit"] = commit_seconds
            _advance_matrices(index, prev_fold, report.fold_id)
        began = time.perf_counter()
        report.cache = cache_writer.after_fold(conn, settings, report.fold_id, prev_fold, updates)
        report.phases["cache"] = time.perf_counter() - began
        purge_changes(conn, settings, cache_writer.live_applied(settings))
    report.seconds = time.perf_counter() - started
    if report.fold_id is not None:
        log.info("neighbour lists folded", extra={"reason": reason, **report.as_dict()})
    return report


def _advance_matrices(index: VectorIndex, prev_fold: int, fold_id: int) -> None:
    """After the commit: the matrices that were at the previous fold are at this one now."""
    for matrix in index.matrices.values():
        if matrix.synced_fold >= prev_fold:
            matrix.synced_fold = fold_id
        # Lists in step before it are in step after it: this fold wrote what it changed.
        if matrix.lists.fold == prev_fold:
            matrix.lists.fold = fold_id


def _fold_pending(
    conn: PgConnection,
    settings: Settings,
    index: VectorIndex,
    device: str,
    prev_fold: int,
    pending: list[tuple[str, str, int]],
    report: FoldReport,
    model_version: str | None = None,
) -> list[lists_cache.ListUpdate]:
    """Steps 1-5 inside the transaction; returns the lists that changed, for the cache."""
    if not pending:
        return []
    fold_id = int(
        one_row(
            conn.execute(
                "INSERT INTO list_folds (changes) VALUES (%s) RETURNING id", (len(pending),)
            )
        )[0]
    )
    report.fold_id = fold_id
    report.changes = len(pending)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for version, kind, item_id in pending:
        groups[version, kind].append(int(item_id))
    updates: list[lists_cache.ListUpdate] = []
    for (version, kind), item_ids in sorted(groups.items()):
        updates += _fold_one_kind(
            conn, settings, index, device, version, kind, item_ids, report, prev_fold
        )
    began = time.perf_counter()
    _write_lists(conn, fold_id, updates)
    conn.execute(
        "UPDATE list_changes SET fold_id = %(f)s"
        " WHERE fold_id IS NULL AND (%(v)s::text IS NULL OR model_version = %(v)s)",
        {"f": fold_id, "v": model_version},
    )
    report.phases["write"] = time.perf_counter() - began
    report.lists_written = sum(update.value is not None for update in updates)
    report.lists_removed = len(updates) - report.lists_written
    conn.execute(
        "UPDATE list_folds SET lists_written = %s, seconds = %s WHERE id = %s",
        (report.lists_written, report.compute_seconds, fold_id),
    )
    return updates


def _fold_one_kind(
    conn: PgConnection,
    settings: Settings,
    index: VectorIndex,
    device: str,
    version: str,
    kind: str,
    item_ids: list[int],
    report: FoldReport,
    prev_fold: int,
) -> list[lists_cache.ListUpdate]:
    """One (version, kind): its matrix synced, its lists brought to ``prev_fold`` (the snapshot's
    newest fold) and folded; adds to the report."""
    began = time.perf_counter()
    matrix = index.sync(conn, version, kind)
    report.lists_read += load_lists(conn, matrix, prev_fold)
    report.phases["sync"] = report.phases.get("sync", 0.0) + time.perf_counter() - began
    began = time.perf_counter()
    result = fold_kind(matrix, np.array(sorted(set(item_ids)), dtype=np.int64), settings, device)
    compute = time.perf_counter() - began
    report.phases["compute"] = report.phases.get("compute", 0.0) + compute
    report.compute_seconds += compute
    report.recomputed += result.recomputed
    report.kinds[f"{version[:12]}/{kind}"] = len(result.written)
    updates = [
        lists_cache.ListUpdate(version, kind, int(matrix.item_ids[row]), matrix.lists.get(row))
        for row in sorted(result.written)
    ]
    updates += [lists_cache.ListUpdate(version, kind, item_id, None) for item_id in result.removed]
    return updates
