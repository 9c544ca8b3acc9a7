"""Folding the change log into the neighbour lists, exactly, in one pass over each matrix.

One fold at a time across every worker (a PostgreSQL advisory lock), so concurrent batches
never lose each other's updates. Inside one REPEATABLE READ snapshot a fold:

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

After the commit it updates the Redis cache in one MULTI (lists + the fold id), or reloads a
whole generation when the cache is cold or behind (workers.search.cache_writer), and purges
change rows older than the retention that the cache no longer needs.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from shared.locks import FOLD_LOCK_KEY
from shared.search import lists_cache
from shared.search.knn import exact_squared_distances
from shared.search.lists import K_MAX, LIST_WIDTH, NeighbourList, from_columns
from shared.search.loader import PgConnection, libpq_url, one_row
from workers.search import cache_writer
from workers.search.index import KindMatrix, VectorIndex, get_index
from workers.search.kernels import (
    RankedRows,
    all_nearest_rows,
    margins,
    nearest_rows,
    rerank,
    select_candidates,
)

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


# --------------------------------------------------------------------------- lists in memory


def load_lists(conn: PgConnection, matrix: KindMatrix) -> None:
    """The lists PostgreSQL holds for this matrix's rows, in the current snapshot."""
    matrix.list_ids[: matrix.n] = -1
    matrix.list_d2[: matrix.n] = np.inf
    matrix.list_len[: matrix.n] = 0
    matrix.list_complete[: matrix.n] = False
    with conn.cursor() as cur:
        cur.execute(
            "SELECT item_id, neighbour_ids, sq_distances, complete FROM neighbour_lists"
            " WHERE model_version = %s AND kind = %s",
            (matrix.version, matrix.kind),
        )
        for item_id, ids, d2, complete in cur:
            row = matrix.row_of.get(int(item_id))
            if row is None:
                continue
            stored = from_columns(ids, d2, complete)
            count = min(len(stored), LIST_WIDTH)
            matrix.list_ids[row, :count] = stored.ids[:count]
            matrix.list_d2[row, :count] = stored.sq_distances[:count]
            matrix.list_len[row] = count
            matrix.list_complete[row] = stored.complete
    matrix.lists_loaded = True


def _row_list(matrix: KindMatrix, row: int) -> NeighbourList:
    count = int(matrix.list_len[row])
    return NeighbourList(
        matrix.list_ids[row, :count].copy(),
        matrix.list_d2[row, :count].copy(),
        bool(matrix.list_complete[row]),
    )


def _set_row(matrix: KindMatrix, row: int, ids: np.ndarray, d2: np.ndarray, complete: bool) -> None:
    order = np.lexsort((ids, d2))
    if order.size > LIST_WIDTH:
        order = order[:LIST_WIDTH]
        complete = False
    count = order.size
    matrix.list_ids[row] = -1
    matrix.list_d2[row] = np.inf
    matrix.list_ids[row, :count] = ids[order]
    matrix.list_d2[row, :count] = d2[order]
    matrix.list_len[row] = count
    matrix.list_complete[row] = complete


# --------------------------------------------------------------------------- one kind


@dataclass
class _KindFold:
    written: set[int]  # rows whose list changed
    removed: list[int]  # item ids whose list is gone
    recomputed: int


# Rows per slice when scanning every list for changed items: bounds the scan's scratch memory
# (about 1 KB per row of the slice) whatever the catalogue's size.
_STRIP_ROWS = 16_384


def _strip(matrix: KindMatrix, changed: np.ndarray) -> set[int]:
    """Remove every changed item from every list; returns the rows that lost an entry."""
    n = matrix.n
    if n == 0 or changed.size == 0:
        return set()
    lists = matrix.list_ids[:n]
    top = int(max(int(changed.max()), int(lists.max(initial=-1)))) + 2
    flag = np.zeros(top, dtype=bool)
    flag[changed + 1] = True
    stripped: set[int] = set()
    for start in range(0, n, _STRIP_ROWS):
        stop = min(n, start + _STRIP_ROWS)
        hit = flag[lists[start:stop] + 1]  # -1 (empty slots) maps to flag[0], always False
        for offset in np.flatnonzero(hit.any(axis=1)).tolist():
            row = start + offset
            count = int(matrix.list_len[row])
            keep = ~hit[offset, :count]
            ids = matrix.list_ids[row, :count][keep]
            d2 = matrix.list_d2[row, :count][keep]
            _set_row(matrix, row, ids, d2, bool(matrix.list_complete[row]))
            stripped.add(row)
    return stripped


@dataclass
class _Estimates:
    """float32 distance estimates of one block of changed items (rows) against every row."""

    new_rows: np.ndarray  # (b,) rows of the changed items that have a vector
    approx: np.ndarray  # (b, n): one changed item's estimates per row
    q_sq: np.ndarray  # (b,) float64
    margin: np.ndarray  # (b,) proven error bound of one comparison, per changed item


def _estimate(matrix: KindMatrix, new_rows: np.ndarray) -> _Estimates:
    """One matrix product of a block of changed vectors against the matrix: O(N x b x d)."""
    x = matrix.live_vectors
    queries = x[new_rows]
    q_sq = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)
    approx = queries @ x.T
    approx *= -2.0
    approx += matrix.live_norms[None, :]
    approx += q_sq.astype(np.float32)[:, None]
    margin = margins(float(matrix.live_norms.max()), q_sq, x.shape[1])
    return _Estimates(new_rows, approx, q_sq, margin)


# Changed items per slice of the screen against the lists' thresholds: its float64 scratch is
# this many x N x 8 bytes.
_SCREEN_ROWS = 64


def _screen(est: _Estimates, threshold: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """(b, n): the pairs whose estimate could beat the list's threshold (within the margin)."""
    margin = est.margin.astype(np.float32)
    screen = np.empty(est.approx.shape, dtype=bool)
    for start in range(0, len(est.approx), _SCREEN_ROWS):
        part = slice(start, start + _SCREEN_ROWS)
        np.less_equal(est.approx[part], threshold[None, :] + margin[part, None], out=screen[part])
    screen[:, skip] = False
    return screen


def _insert(matrix: KindMatrix, est: _Estimates, skip: np.ndarray) -> set[int]:
    """Put the changed items into every other list they belong to (``skip``: rows whose lists
    are recomputed anyway; with no lists yet that is every row, and nothing is done)."""
    n = matrix.n
    new_rows = est.new_rows
    if new_rows.size == 0 or skip.size >= n:
        return set()
    x = matrix.live_vectors
    ids = matrix.live_ids
    queries = x[new_rows]
    lens = matrix.list_len[:n]
    complete = matrix.list_complete[:n]
    last = np.where(lens > 0, matrix.list_d2[np.arange(n), np.maximum(lens - 1, 0)], -np.inf)
    threshold = np.where(complete, np.inf, last)
    # Row-major: grouped by changed item, rows ascending within each.
    cols, rows = np.nonzero(_screen(est, threshold, skip))
    mine = rows != new_rows[cols]  # an item is not its own neighbour
    rows, cols = rows[mine], cols[mine]
    if rows.size == 0:
        return set()
    bounds = np.searchsorted(cols, np.arange(new_rows.size + 1))
    d2 = np.empty(rows.size, dtype=np.float64)
    for c in range(new_rows.size):
        part = slice(int(bounds[c]), int(bounds[c + 1]))
        if part.start < part.stop:
            d2[part] = exact_squared_distances(
                x[rows[part]], queries[c], matrix.live_norms64[rows[part]]
            )
    cids = ids[new_rows][cols]
    # Past a truncated list's last entry, unseen items may come first: the prefix stays as is.
    count = lens[rows]
    tail_d2 = matrix.list_d2[rows, np.maximum(count - 1, 0)]
    tail_id = matrix.list_ids[rows, np.maximum(count - 1, 0)]
    admit = complete[rows] | (d2 < tail_d2) | ((d2 == tail_d2) & (cids < tail_id))
    rows, cids, d2 = rows[admit], cids[admit], d2[admit]
    if rows.size == 0:
        return set()
    touched, per_row = np.unique(rows, return_counts=True)
    single = np.isin(rows, touched[per_row == 1])
    _insert_one_each(matrix, rows[single], cids[single], d2[single])
    for row in touched[per_row > 1].tolist():
        mine = rows == row
        count = int(lens[row])
        _set_row(
            matrix,
            row,
            np.concatenate([matrix.list_ids[row, :count], cids[mine]]),
            np.concatenate([matrix.list_d2[row, :count], d2[mine]]),
            bool(complete[row]),
        )
    return set(touched.tolist())


def _insert_one_each(
    matrix: KindMatrix, rows: np.ndarray, cids: np.ndarray, d2: np.ndarray
) -> None:
    """One new entry into each of many lists at once (the common case of a fold)."""
    if rows.size == 0:
        return
    old_d2, old_ids = matrix.list_d2[rows], matrix.list_ids[rows]
    before = (old_d2 < d2[:, None]) | ((old_d2 == d2[:, None]) & (old_ids < cids[:, None]))
    pos = before.sum(axis=1)[:, None]
    slot = np.arange(LIST_WIDTH)[None, :]
    shifted_d2 = np.concatenate([np.full((rows.size, 1), np.inf), old_d2[:, :-1]], axis=1)
    shifted_ids = np.concatenate([np.full((rows.size, 1), -1), old_ids[:, :-1]], axis=1)
    matrix.list_d2[rows] = np.where(
        slot < pos, old_d2, np.where(slot == pos, d2[:, None], shifted_d2)
    )
    matrix.list_ids[rows] = np.where(
        slot < pos, old_ids, np.where(slot == pos, cids[:, None], shifted_ids)
    )
    grown = matrix.list_len[rows] + 1
    matrix.list_complete[rows] &= grown <= LIST_WIDTH  # one pushed off the end: truncated now
    matrix.list_len[rows] = np.minimum(grown, LIST_WIDTH)


def _recompute_estimated(matrix: KindMatrix, est: _Estimates) -> None:
    """Fresh lists for a block of changed items, from the product the block already made.

    Consumes ``est.approx`` (its own entries become inf)."""
    if est.new_rows.size == 0 or matrix.n < 2:
        return
    rows = est.new_rows
    approx = est.approx
    approx[np.arange(rows.size), rows] = np.inf  # not its own neighbour
    found = select_candidates(approx, min(LIST_WIDTH, matrix.n - 1), est.margin)
    ranked = rerank(
        matrix.live_vectors,
        matrix.live_norms64,
        matrix.live_ids,
        matrix.live_vectors[rows],
        found,
        LIST_WIDTH,
    )
    _store_ranked(matrix, rows, ranked)


def _recompute(matrix: KindMatrix, rows: np.ndarray, settings: Settings, device: str) -> None:
    """Fresh lists for ``rows`` by the blocked kernel (block x N of scratch at a time)."""
    if rows.size == 0:
        return
    if rows.size == matrix.n and device == "numpy":
        # Every list (the first computation): the symmetric pass makes half the products.
        ranked = all_nearest_rows(
            matrix.live_vectors,
            matrix.live_norms,
            matrix.live_ids,
            LIST_WIDTH,
            sq_norms64=matrix.live_norms64,
            block_rows=settings.list_block_rows,
        )
        _store_ranked(matrix, rows, ranked)
        return
    ranked = nearest_rows(
        matrix.live_vectors,
        matrix.live_norms,
        matrix.live_ids,
        matrix.live_vectors[rows],
        LIST_WIDTH,
        self_rows=rows,
        sq_norms64=matrix.live_norms64,
        block_rows=settings.list_block_rows,
        device=device,
    )
    _store_ranked(matrix, rows, ranked)


def _store_ranked(matrix: KindMatrix, rows: np.ndarray, ranked: RankedRows) -> None:
    ids = matrix.live_ids
    others = matrix.n - 1
    for offset, row in enumerate(rows.tolist()):
        count = int(ranked.counts[offset])
        found = ranked.rows[offset, :count]
        matrix.list_ids[row] = -1
        matrix.list_d2[row] = np.inf
        matrix.list_ids[row, :count] = ids[found]
        matrix.list_d2[row, :count] = ranked.sq_distances[offset, :count]
        matrix.list_len[row] = count
        matrix.list_complete[row] = count == others


def fold_kind(
    matrix: KindMatrix, changed_ids: np.ndarray, settings: Settings, device: str = "numpy"
) -> _KindFold:
    """Steps 2-4 of the module docstring for one (version, kind); lists change in place."""
    n = matrix.n
    removed = [int(i) for i in changed_ids.tolist() if int(i) not in matrix.row_of]
    new_rows = np.array(
        sorted(matrix.row_of[int(i)] for i in changed_ids.tolist() if int(i) in matrix.row_of),
        dtype=np.int64,
    )
    written = _strip(matrix, changed_ids)
    lens = matrix.list_len[:n]
    short = (lens < min(K_MAX, max(n - 1, 0))) & ~matrix.list_complete[:n]
    recompute = np.union1d(new_rows, np.flatnonzero(short)).astype(np.int64)
    rest = recompute
    # Small catalogues and first computations go straight to the blocked kernel. Otherwise the
    # changed items go in blocks of list_block_rows: one block's product (block x N) serves both
    # its insertions and its own fresh lists, and is dropped before the next block, so memory
    # does not grow with the number of changes. Inserting block after block is exact: after
    # each, every list is an exact prefix of the order over all items but the later blocks'.
    if new_rows.size and n > 1 and recompute.size < n:
        block = max(1, settings.list_block_rows)
        for start in range(0, new_rows.size, block):
            est = _estimate(matrix, new_rows[start : start + block])
            written |= _insert(matrix, est, recompute)
            _recompute_estimated(matrix, est)
            del est
        rest = np.setdiff1d(recompute, new_rows)
    _recompute(matrix, rest, settings, device)
    written |= set(recompute.tolist())
    # A truncated list that now holds every other item (the catalogue shrank) is complete.
    whole = np.flatnonzero((matrix.list_len[:n] == n - 1) & ~matrix.list_complete[:n])
    matrix.list_complete[whole] = True
    written |= set(whole.tolist())
    return _KindFold(written, removed, int(recompute.size))


# --------------------------------------------------------------------------- PostgreSQL


def _write_lists(
    conn: PgConnection,
    fold_id: int,
    rows: list[tuple[str, str, int, NeighbourList]],
    removed: list[tuple[str, str, int]],
) -> None:
    if rows:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS fold_lists (model_version text, kind text,"
            " item_id bigint, neighbour_ids bytea, sq_distances bytea, complete boolean)"
            " ON COMMIT DELETE ROWS"
        )
        with conn.cursor() as cur, cur.copy("COPY fold_lists FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "int8", "bytea", "bytea", "bool"])
            for version, kind, item_id, value in rows:
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
    by_kind: dict[tuple[str, str], list[int]] = defaultdict(list)
    for version, kind, item_id in removed:
        by_kind[version, kind].append(item_id)
    for (version, kind), item_ids in by_kind.items():
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
    with connect(settings) as conn, advisory_lock(conn), index.lock:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            prev_fold = int(one_row(conn.execute("SELECT coalesce(max(id), 0) FROM list_folds"))[0])
            pending = conn.execute(
                "SELECT DISTINCT model_version, kind, item_id FROM list_changes"
                " WHERE fold_id IS NULL AND (%(v)s::text IS NULL OR model_version = %(v)s)",
                {"v": model_version},
            ).fetchall()
            updates: list[lists_cache.ListUpdate] = []
            if not pending:
                conn.execute("ROLLBACK")
            else:
                updates = _fold_locked(
                    conn, settings, index, device, prev_fold, pending, report, model_version
                )
                began = time.perf_counter()
                conn.execute("COMMIT")
                report.phases["commit"] = time.perf_counter() - began
        except BaseException:
            index.invalidate_lists()  # half-folded in memory: reload from PostgreSQL next time
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                log.warning("rollback failed; the connection is going away anyway")
            raise
        if report.fold_id is not None:
            for matrix in index.matrices.values():
                if matrix.synced_fold >= prev_fold:
                    matrix.synced_fold = report.fold_id
            index.lists_fold = report.fold_id
        # Still under the lock: no other fold or reload can slip between PostgreSQL and Redis.
        began = time.perf_counter()
        report.cache = cache_writer.after_fold(conn, settings, report.fold_id, prev_fold, updates)
        report.phases["cache"] = time.perf_counter() - began
        purge_changes(conn, settings, cache_writer.live_applied(settings))
    report.seconds = time.perf_counter() - started
    if report.fold_id is not None:
        log.info("neighbour lists folded", extra={"reason": reason, **report.as_dict()})
    return report


def _fold_locked(
    conn: PgConnection,
    settings: Settings,
    index: VectorIndex,
    device: str,
    prev_fold: int,
    pending: list[tuple[str, str, int]],
    report: FoldReport,
    model_version: str | None = None,
) -> list[lists_cache.ListUpdate]:
    fold_id = int(
        one_row(
            conn.execute(
                "INSERT INTO list_folds (changes) VALUES (%s) RETURNING id", (len(pending),)
            )
        )[0]
    )
    report.fold_id = fold_id
    report.changes = len(pending)
    if index.lists_fold != prev_fold:
        # Another process folded since (or this one never did): our lists are not PostgreSQL's.
        index.invalidate_lists()
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for version, kind, item_id in pending:
        groups[version, kind].append(int(item_id))
    rows: list[tuple[str, str, int, NeighbourList]] = []
    removed: list[tuple[str, str, int]] = []
    updates: list[lists_cache.ListUpdate] = []
    compute = sync = 0.0
    for (version, kind), item_ids in sorted(groups.items()):
        began = time.perf_counter()
        matrix = index.sync(conn, version, kind)
        if not matrix.lists_loaded:
            load_lists(conn, matrix)
        sync += time.perf_counter() - began
        began = time.perf_counter()
        result = fold_kind(
            matrix, np.array(sorted(set(item_ids)), dtype=np.int64), settings, device
        )
        compute += time.perf_counter() - began
        report.recomputed += result.recomputed
        report.kinds[f"{version[:12]}/{kind}"] = len(result.written)
        for row in sorted(result.written):
            value = _row_list(matrix, row)
            item_id = int(matrix.item_ids[row])
            rows.append((version, kind, item_id, value))
            updates.append(lists_cache.ListUpdate(version, kind, item_id, value))
        for item_id in result.removed:
            removed.append((version, kind, item_id))
            updates.append(lists_cache.ListUpdate(version, kind, item_id, None))
    began = time.perf_counter()
    _write_lists(conn, fold_id, rows, removed)
    conn.execute(
        "UPDATE list_changes SET fold_id = %(f)s"
        " WHERE fold_id IS NULL AND (%(v)s::text IS NULL OR model_version = %(v)s)",
        {"f": fold_id, "v": model_version},
    )
    report.phases.update(sync=sync, compute=compute, write=time.perf_counter() - began)
    report.lists_written = len(rows)
    report.lists_removed = len(removed)
    report.compute_seconds = compute
    conn.execute(
        "UPDATE list_folds SET lists_written = %s, seconds = %s WHERE id = %s",
        (len(rows), compute, fold_id),
    )
    return updates
