"""A query worker holds its version's matrices before its first search."""

from __future__ import annotations

import numpy as np

from tests.recommendations.helpers import VERSION, add_catalogue, add_item, stored_vectors
from workers.search.index import VectorIndex
from workers.search.preload import preload_matrices


def test_preloaded_matrices_hold_every_kind_and_follow_later_changes(settings, db_session):
    rng = np.random.default_rng(4)
    add_catalogue(
        db_session,
        {
            f"s{i:02d}": {
                "full": rng.standard_normal(6, np.float32),
                **({"top": rng.standard_normal(6, np.float32)} if i % 2 else {}),
            }
            for i in range(20)
        },
    )
    add_item(db_session, "other", {"full": np.zeros(6, np.float32)}, version="another-version")
    index = VectorIndex()
    assert preload_matrices(settings, VERSION, index) == {"top": 10, "bottom": 0, "full": 20}
    assert set(index.matrices) == {(VERSION, "top"), (VERSION, "bottom"), (VERSION, "full")}
    loaded = index.matrices[VERSION, "full"]
    # A change after the preload is patched into the same matrix, not a reload.
    add_item(db_session, "late", {"full": rng.standard_normal(6, np.float32)})
    assert preload_matrices(settings, VERSION, index)["full"] == 21
    assert index.matrices[VERSION, "full"] is loaded
    db_session.rollback()
    for item_id, _, vector in stored_vectors(db_session, "full"):
        np.testing.assert_array_equal(loaded.live_vectors[loaded.row_of[item_id]], vector)


def test_each_worker_preloads_what_its_queues_need():
    from workers.search.preload import plan_for

    query = plan_for(["query", "query.v1"])
    assert (query.models, query.matrices, query.lists, query.keeper) == (True, True, False, True)
    lists = plan_for(["lists", "lists.v1"])
    assert (lists.models, lists.matrices, lists.lists, lists.keeper) == (False, True, True, False)
    ingest = plan_for(["ingest", "default", "ingest.v1"])
    assert (ingest.models, ingest.matrices, ingest.lists) == (True, False, False)
    # One process on every queue (the worker image's default command) does it all and folds.
    every = plan_for(["ingest", "default", "query", "lists"])
    assert (every.models, every.matrices, every.lists, every.keeper) == (True, True, True, False)


def test_the_keeper_brings_every_held_matrix_up_to_date(settings, db_session):
    from workers.search.keeper import sync_all

    rng = np.random.default_rng(6)
    add_catalogue(
        db_session, {f"k{i:02d}": {"full": rng.standard_normal(6, np.float32)} for i in range(8)}
    )
    index = VectorIndex()
    preload_matrices(settings, VERSION, index)
    held = index.matrices[VERSION, "full"]
    add_item(db_session, "later", {"full": rng.standard_normal(6, np.float32)})
    assert sync_all(settings, index) == 3  # full, top, bottom
    assert index.matrices[VERSION, "full"] is held and held.n == 9


def test_a_pending_change_is_read_once_however_many_searches_sync_before_its_fold(
    settings, db_session
):
    from tests.recommendations.helpers import replace_vector
    from workers.search.keeper import sync_all

    rng = np.random.default_rng(7)
    add_catalogue(
        db_session, {f"r{i:02d}": {"full": rng.standard_normal(6, np.float32)} for i in range(8)}
    )
    index = VectorIndex()
    preload_matrices(settings, VERSION, index)
    matrix = index.matrices[VERSION, "full"]
    add_item(db_session, "pending", {"full": rng.standard_normal(6, np.float32)})
    # No fold runs: every change stays pending and is listed by every sync. The first reads
    # the new item and the loaded rows' (it does not know their row versions yet), once.
    sync_all(settings, index)
    assert matrix.vectors_read == 9
    for _ in range(3):
        sync_all(settings, index)
    assert matrix.vectors_read == 9
    replace_vector(db_session, "pending", "full", rng.standard_normal(6, np.float32))
    sync_all(settings, index)
    sync_all(settings, index)
    assert matrix.vectors_read == 10
    db_session.rollback()
    for item_id, _, vector in stored_vectors(db_session, "full"):
        np.testing.assert_array_equal(matrix.live_vectors[matrix.row_of[item_id]], vector)


def test_a_matrix_load_that_finds_more_rows_than_it_counted_holds_them_all(
    settings, db_session, monkeypatch
):
    # Rows committed between the count and the COPY (a caller with no snapshot of its own):
    # the count is made to fall 25 short, so the load must grow its arrays as rows arrive.
    import psycopg

    from shared.search.loader import libpq_url
    from workers.search import index as index_module

    rng = np.random.default_rng(9)
    add_catalogue(
        db_session, {f"g{i:02d}": {"full": rng.standard_normal(6, np.float32)} for i in range(30)}
    )
    counted = index_module.one_row

    def short_count(cursor):
        (count,) = counted(cursor)
        return (count - 25,)

    monkeypatch.setattr(index_module, "one_row", short_count)
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        ids, vectors = index_module.load_matrix(conn, VERSION, "full")
    stored = stored_vectors(db_session, "full")
    assert ids.tolist() == [item_id for item_id, _, _ in stored]
    for row, (_, _, vector) in enumerate(stored):
        np.testing.assert_array_equal(vectors[row], vector)
    # The headroom the next batches append into is there, and the matrix keeps this array.
    assert vectors.shape[0] > len(ids)
    matrix = index_module.KindMatrix(VERSION, "full")
    matrix.bulk_load(ids, vectors)
    assert matrix.vectors is vectors and matrix.n == 30
    np.testing.assert_array_equal(matrix.live_ids, ids)
