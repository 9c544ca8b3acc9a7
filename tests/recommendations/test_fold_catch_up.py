"""Two workers of one version folding in turn: each reads back only the lists the other's folds
wrote, and its lists equal a full load from PostgreSQL."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from shared.models import NeighbourList
from shared.search.lists import LIST_WIDTH
from tests.recommendations.helpers import VERSION, add_item, delete_item, replace_vector
from tests.recommendations.test_lists_exact import _check_stored_lists
from workers.search.fold import connect, fold, load_lists
from workers.search.index import VectorIndex
from workers.search.preload import preload_matrices

Lists = dict[int, tuple[list[int], list[float], bool]]


def _in_memory(index: VectorIndex, kind: str) -> Lists:
    matrix = index.matrices[VERSION, kind]
    out: Lists = {}
    for row in range(matrix.n):
        value = matrix.lists.get(row)
        out[int(matrix.item_ids[row])] = (
            value.ids.tolist(),
            value.sq_distances.tolist(),
            value.complete,
        )
    return out


def _full_load(settings, kind: str) -> Lists:
    """What a worker that never folded loads: every list, in one snapshot."""
    index = VectorIndex()
    with connect(settings) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM list_folds").fetchone()
        matrix = index.sync(conn, VERSION, kind)
        load_lists(conn, matrix, int(newest[0]))
        conn.execute("ROLLBACK")
    return _in_memory(index, kind)


def _written_by(db_session, fold_id: int) -> int:
    db_session.rollback()
    return db_session.scalar(
        select(func.count()).select_from(NeighbourList).where(NeighbourList.fold_id == fold_id)
    )


def test_workers_folding_in_turn_read_only_the_other_ones_lists(
    settings, db_session, cache_redis, broker_redis
):
    rng = np.random.default_rng(8)
    skus = [f"c{i:03d}" for i in range(5 * LIST_WIDTH)]
    for sku in skus:
        add_item(db_session, sku, {k: rng.standard_normal(8, np.float32) for k in ("full", "top")})
    first, second = VectorIndex(), VectorIndex()
    assert fold(settings, index=first).lists_read == 0  # nothing stored yet
    total = 2 * len(skus)
    assert fold(settings, index=second).fold_id is None  # nothing pending: loads nothing

    # The second worker folds a change of one kind: its first fold loads every list of it.
    replace_vector(db_session, skus[0], "full", rng.standard_normal(8, np.float32))
    add_item(db_session, "late", {"full": rng.standard_normal(8, np.float32)})
    by_second = fold(settings, index=second)
    assert by_second.lists_read == total // 2

    # The first worker folds next, both kinds: it reads what the second wrote, nothing else.
    written = _written_by(db_session, by_second.fold_id)
    assert 0 < written < total // 2
    delete_item(db_session, skus[10])
    replace_vector(db_session, skus[20], "top", rng.standard_normal(8, np.float32))
    by_first = fold(settings, index=first)
    assert by_first.lists_read == written
    _check_stored_lists(db_session)
    for kind in ("full", "top"):
        assert _in_memory(first, kind) == _full_load(settings, kind), kind

    # And back: the second reads only the first's lists of the kind it holds.
    written = _written_by_kind(db_session, by_first.fold_id, "full")
    replace_vector(db_session, skus[30], "full", rng.standard_normal(8, np.float32))
    again = fold(settings, index=second)
    assert again.lists_read == written
    _check_stored_lists(db_session)
    assert _in_memory(second, "full") == _full_load(settings, "full")


def _written_by_kind(db_session, fold_id: int, kind: str) -> int:
    db_session.rollback()
    return db_session.scalar(
        select(func.count())
        .select_from(NeighbourList)
        .where(NeighbourList.fold_id == fold_id, NeighbourList.kind == kind)
    )


def test_a_lists_worker_preloads_its_lists_and_folds_without_reading_them_again(
    settings, db_session, cache_redis, broker_redis
):
    rng = np.random.default_rng(9)
    for i in range(40):
        add_item(db_session, f"p{i:02d}", {"full": rng.standard_normal(6, np.float32)})
    fold(settings, index=VectorIndex())
    index = VectorIndex()
    preload_matrices(settings, VERSION, index, lists=True)
    assert _in_memory(index, "full") == _full_load(settings, "full")
    add_item(db_session, "new", {"full": rng.standard_normal(6, np.float32)})
    assert fold(settings, index=index).lists_read == 0
    _check_stored_lists(db_session)


def test_a_query_worker_holds_no_list_arrays(settings, db_session):
    rng = np.random.default_rng(10)
    for i in range(30):
        add_item(db_session, f"q{i:02d}", {"full": rng.standard_normal(6, np.float32)})
    index = VectorIndex()
    preload_matrices(settings, VERSION, index)
    matrix = index.matrices[VERSION, "full"]
    assert matrix.n == 30 and not matrix.lists.held and matrix.lists.ids.size == 0
