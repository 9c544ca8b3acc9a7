"""A worker's matrices: every vector of each (model version, kind), kept in step with PostgreSQL.

The first use of a (version, kind) streams its vectors out of PostgreSQL (binary COPY, in item
id order). After that the matrix follows the change log (``list_changes``, filled by triggers on
``embeddings``): a sync re-reads the vectors of every item changed since the last fold it saw,
plus the changes no fold has taken in yet, inside one REPEATABLE READ snapshot, and patches rows
in place. After a sync the matrix equals what PostgreSQL holds in that snapshot. A matrix older
than the log's retention (``list_state.purged_through``) is reloaded whole.

Rows are not kept in id order (a deleted row is filled by the last one), so ties are always
broken by ``item_ids``, never by row number. Neighbour lists ride along row by row for the fold
(``lists``: workers.search.neighbour_lists).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from shared.search.knn import squared_norms, squared_norms64
from shared.search.loader import PgConnection, one_row, stream_vectors
from shared.vectors import DTYPE
from workers.search.neighbour_lists import NeighbourLists

log = logging.getLogger(__name__)

_GROWTH = 1.25


@dataclass
class KindMatrix:
    """One (version, kind): vectors by row, the row of each item, and the rows' lists."""

    version: str
    kind: str
    dim: int = 0
    n: int = 0
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    sq_norms: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    sq_norms64: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    item_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    row_of: dict[int, int] = field(default_factory=dict)
    # The newest fold whose changes this matrix includes (rows may be newer still).
    synced_fold: int = 0
    # The ``embeddings`` row version (its xmin) each row written by a sync holds: a change still
    # pending is listed again by every sync until a fold takes it in, and its vector is read
    # again only when the row moved since.
    stamps: dict[int, int] = field(default_factory=dict)
    # Vectors read by syncs since the matrix was loaded (what a sync costs: for the reports).
    vectors_read: int = 0
    # Neighbour lists per row, loaded and kept exact by the fold.
    lists: NeighbourLists = field(default_factory=NeighbourLists)

    @property
    def live_vectors(self) -> np.ndarray:
        return self.vectors[: self.n]

    @property
    def live_norms(self) -> np.ndarray:
        return self.sq_norms[: self.n]

    @property
    def live_norms64(self) -> np.ndarray:
        return self.sq_norms64[: self.n]

    @property
    def live_ids(self) -> np.ndarray:
        return self.item_ids[: self.n]

    def _reserve(self, rows: int) -> None:
        if rows <= self.vectors.shape[0]:
            return
        cap = max(rows, int(self.vectors.shape[0] * _GROWTH) + 16)

        def grown(array: np.ndarray, shape: tuple[int, ...], fill: float | None) -> np.ndarray:
            out = np.empty(shape, dtype=array.dtype)
            out[: self.n] = array[: self.n]
            if fill is not None:
                out[self.n :] = fill
            return out

        # Rows past ``n`` of the matrix are never read (every use takes ``[:n]``): not filled,
        # so a big matrix's headroom costs no pass over fresh pages.
        self.vectors = grown(self.vectors, (cap, self.dim), None)
        self.sq_norms = grown(self.sq_norms, (cap,), 0.0)
        self.sq_norms64 = grown(self.sq_norms64, (cap,), 0.0)
        self.item_ids = grown(self.item_ids, (cap,), -1)
        self.lists.reserve(cap, self.n)

    def put(self, item_id: int, vector: np.ndarray, stamp: int | None = None) -> int:
        """Insert or overwrite an item's vector (``stamp``: the xmin of the row it was read
        from); returns its row. Its list is emptied."""
        if self.dim == 0:
            self.dim = int(vector.shape[0])
            self.vectors = np.empty((0, self.dim), np.float32)
        elif vector.shape[0] != self.dim:
            raise ValueError(
                f"{self.version}/{self.kind}: item {item_id} has {vector.shape[0]} values,"
                f" the others {self.dim}"
            )
        row = self.row_of.get(item_id)
        if row is None:
            self._reserve(self.n + 1)
            row = self.n
            self.n += 1
            self.row_of[item_id] = row
            self.item_ids[row] = item_id
        if stamp is None:
            self.stamps.pop(item_id, None)
        else:
            self.stamps[item_id] = stamp
        self.vectors[row] = vector
        self.sq_norms[row] = squared_norms(vector[None, :].astype(np.float32))[0]
        self.sq_norms64[row] = squared_norms64(vector[None, :].astype(np.float32))[0]
        self.lists.clear(row)
        return row

    def remove(self, item_id: int) -> bool:
        """Drop an item's row (the last row moves into the hole, list and all)."""
        self.stamps.pop(item_id, None)
        row = self.row_of.pop(item_id, None)
        if row is None:
            return False
        last = self.n - 1
        if row != last:
            moved = int(self.item_ids[last])
            for array in (self.vectors, self.sq_norms, self.sq_norms64, self.item_ids):
                array[row] = array[last]
            self.lists.move(last, row)
            self.row_of[moved] = row
        self.item_ids[last] = -1
        self.n = last
        return True

    def bulk_load(self, item_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Every row at once. ``vectors`` may have more rows than ``item_ids`` (the headroom
        :func:`load_matrix` makes): the matrix then keeps that very array, with no copy."""
        n = len(item_ids)
        self.dim = int(vectors.shape[1]) if vectors.size else self.dim
        self.lists = NeighbourLists()
        self.n = 0
        self.vectors = np.empty((0, self.dim), np.float32)
        self.sq_norms = np.empty(0, np.float32)
        self.sq_norms64 = np.empty(0, np.float64)
        self.item_ids = np.empty(0, np.int64)
        owned = vectors.dtype == np.float32 and vectors.flags.c_contiguous
        room = vectors.shape[0] if owned and vectors.shape[0] > n else headroom(n)
        self._reserve(room)  # np.empty: the rows are not touched until written
        if room == vectors.shape[0] and owned:
            self.vectors = vectors
        else:
            self.vectors[:n] = vectors[:n]
        self.n = n
        live = self.vectors[:n]
        self.sq_norms[:n] = squared_norms(live) if n else 0
        self.sq_norms64[:n] = squared_norms64(live) if n else 0
        self.item_ids[:n] = item_ids
        self.row_of = {int(i): r for r, i in enumerate(item_ids.tolist())}
        self.stamps = {}


def headroom(rows: int) -> int:
    """Rows a freshly loaded matrix has room for: the next batches append without a copy."""
    return rows + max(1024, rows // 8)


def load_matrix(conn: PgConnection, version: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and vectors of one (version, kind), in item id order. The vectors' array has
    :func:`headroom` rows, the first ``len(ids)`` of them loaded: each vector is copied once,
    from the COPY stream into its row (no list of chunks, no joined copy of the matrix)."""
    expected = int(
        one_row(
            conn.execute(
                "SELECT count(*) FROM embeddings WHERE model_version = %s AND kind = %s",
                (version, kind),
            )
        )[0]
    )
    ids = np.empty(expected, dtype=np.int64)
    vectors = np.empty((0, 0), dtype=np.float32)
    into = memoryview(b"")
    width = 0
    n = 0
    rows = tqdm(
        stream_vectors(conn, version, kind),
        desc=f"load {version[:12]}/{kind}",
        unit="row",
        disable=None,
        mininterval=2,
        total=expected,
    )
    for row in rows:
        if n == 0 or n >= ids.size:
            # The first row sets the width; rows committed between the count and the COPY (a
            # caller with no snapshot of its own) grow the arrays.
            width = width or len(row.vector)
            room = headroom(max(expected, n + 1))
            grown = np.empty((room, width // 4), dtype=np.float32)
            if n:
                grown[:n] = vectors[:n]
            vectors, ids = grown, np.resize(ids, room)
            into = memoryview(vectors.data).cast("B")
        if len(row.vector) != width:
            raise ValueError(f"{version}/{kind}: item {row.item_id} has another vector size")
        # DTYPE is little-endian float32: the bytes are the row's values as they stand, copied
        # straight into its row (a slice assignment: no array object per row).
        into[n * width : (n + 1) * width] = row.vector
        ids[n] = row.item_id
        n += 1
    return ids[:n], vectors


class VectorIndex:
    """Every (version, kind) matrix this worker process has needed so far."""

    def __init__(self) -> None:
        self.matrices: dict[tuple[str, str], KindMatrix] = {}
        self.lock = threading.RLock()

    def invalidate_lists(self) -> None:
        """Forget every list (a fold failed half-way): the next fold loads them whole."""
        for matrix in self.matrices.values():
            matrix.lists.fold = None

    @staticmethod
    def fold_state(conn: PgConnection) -> tuple[int, int | None]:
        """(newest fold, log purged through) in ``conn``'s snapshot: what :meth:`sync` checks a
        matrix against; read once for every kind a search syncs in that snapshot."""
        newest_fold, purged = one_row(
            conn.execute(
                "SELECT coalesce((SELECT max(id) FROM list_folds), 0),"
                " (SELECT purged_through FROM list_state WHERE id = 1)"
            )
        )
        return int(newest_fold), purged

    def sync(
        self,
        conn: PgConnection,
        version: str,
        kind: str,
        state: tuple[int, int | None] | None = None,
    ) -> KindMatrix:
        """Bring one matrix up to the snapshot of ``conn``'s open REPEATABLE READ transaction
        (``state``: its :meth:`fold_state`, when already read in it)."""
        newest_fold, purged = state if state is not None else self.fold_state(conn)
        matrix = self.matrices.get((version, kind))
        # Older than the log keeps, or newer than the database (restored from a backup): reload.
        stale = matrix is not None and not (purged or 0) <= matrix.synced_fold <= newest_fold
        if matrix is None or stale:
            matrix = KindMatrix(version, kind)
            ids, vectors = load_matrix(conn, version, kind)
            matrix.bulk_load(ids, vectors)
            matrix.synced_fold = int(newest_fold)
            self.matrices[(version, kind)] = matrix
            log.info(
                "matrix loaded",
                extra={"model_version": version, "kind": kind, "rows": matrix.n},
            )
            return matrix
        _apply_changes(conn, matrix)
        matrix.synced_fold = int(newest_fold)
        return matrix


def _apply_changes(conn: PgConnection, matrix: KindMatrix) -> None:
    """Patch the rows of every item changed since ``matrix.synced_fold`` or still pending; a
    vector is read only when its row version differs from the one the matrix holds."""
    params = {"v": matrix.version, "k": matrix.kind, "f": matrix.synced_fold}
    changed = conn.execute(
        "SELECT c.item_id, e.xmin::text::bigint FROM"
        " (SELECT DISTINCT item_id FROM list_changes WHERE model_version = %(v)s"
        "  AND kind = %(k)s AND (fold_id IS NULL OR fold_id > %(f)s)) c"
        " LEFT JOIN embeddings e"
        " ON e.item_id = c.item_id AND e.model_version = %(v)s AND e.kind = %(k)s",
        params,
    ).fetchall()
    stale = []
    for item_id, stamp in changed:
        if stamp is None:
            matrix.remove(int(item_id))
        elif matrix.stamps.get(int(item_id)) != int(stamp) or int(item_id) not in matrix.row_of:
            stale.append(int(item_id))
    if not stale:
        return
    rows = conn.execute(
        "SELECT item_id, xmin::text::bigint, vector FROM embeddings"
        " WHERE model_version = %(v)s AND kind = %(k)s AND item_id = ANY(%(ids)s)",
        {**params, "ids": stale},
    ).fetchall()
    matrix.vectors_read += len(rows)
    for item_id, stamp, vector in rows:
        vector32 = np.frombuffer(vector, dtype=DTYPE).astype(np.float32)
        matrix.put(int(item_id), vector32, int(stamp))


_index: VectorIndex | None = None
_index_lock = threading.Lock()


def get_index() -> VectorIndex:
    """This process's index (made on first use, after any fork)."""
    global _index
    with _index_lock:
        if _index is None:
            _index = VectorIndex()
        return _index


def reset_index() -> None:
    global _index
    with _index_lock:
        _index = None
