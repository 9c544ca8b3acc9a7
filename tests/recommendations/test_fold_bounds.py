"""A fold's working memory is bounded by its block, not by how many changes wait for it.

A backlog (a backfill, a worker that was down) is folded block after block of changed items;
the lists stay equal to brute force, and the scratch memory of a fold of many changes is that
of a fold of one block.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from shared.search.lists import LIST_SLACK, LIST_WIDTH
from tests.recommendations.helpers import add_item, delete_item, replace_vector
from tests.recommendations.test_lists_exact import _check_items, _check_stored_lists, _vector
from workers.search.fold import fold, fold_kind
from workers.search.index import KindMatrix, VectorIndex


@pytest.mark.parametrize("tie_heavy", [True, False], ids=["ties", "gaussian"])
def test_a_backlog_of_many_blocks_folds_to_the_brute_force_lists(
    settings, db_session, cache_redis, broker_redis, tie_heavy
):
    settings = settings.replace(list_block_rows=8)
    rng = np.random.default_rng(21)
    dim = 5 if tie_heavy else 12
    live: list[str] = []

    def insert(first: int, count: int) -> None:
        for i in range(first, first + count):
            kinds = {"full": _vector(rng, dim, tie_heavy)}
            if i % 3:
                kinds["top"] = _vector(rng, dim, tie_heavy)
            add_item(db_session, f"p{i:04d}", kinds)
            live.append(f"p{i:04d}")

    insert(0, LIST_WIDTH + 40)
    fold(settings, index=VectorIndex())  # the first computation, blocked over rows
    _check_stored_lists(db_session)
    # Many blocks of pending changes at once: inserts, re-photos and more deletions than the
    # lists' slack, so insertions into truncated lists and refills meet in one fold.
    insert(LIST_WIDTH + 40, 45)
    for sku in rng.choice(live, size=12, replace=False):
        replace_vector(db_session, str(sku), "full", _vector(rng, dim, tie_heavy))
    for sku in rng.choice(live, size=LIST_SLACK + 7, replace=False):
        delete_item(db_session, str(sku))
        live.remove(str(sku))
    report = fold(settings, index=VectorIndex())
    assert report.changes > 8 * settings.list_block_rows
    _check_stored_lists(db_session)
    used = {"lists": 0, "worker": 0}
    _check_items(settings, db_session, cache_redis, (1, 10, 100), used)
    assert used["worker"] == 0


def _fold_peak_bytes(changes: int, settings) -> int:
    """Peak bytes numpy allocates while folding ``changes`` new items into 3,000 items' lists."""
    rng = np.random.default_rng(5)
    n, dim = 3_000, 16
    matrix = KindMatrix("v", "full")
    matrix.bulk_load(np.arange(1, n + 1, dtype=np.int64), rng.standard_normal((n, dim), np.float32))
    fold_kind(matrix, matrix.live_ids.copy(), settings)  # every list, from nothing
    # New items (in no list yet): every one goes through the estimates, none forces a refill.
    added = np.arange(n + 1, n + changes + 1, dtype=np.int64)
    for item_id in added.tolist():
        matrix.put(item_id, rng.standard_normal(dim).astype(np.float32))
    tracemalloc.start()
    try:
        fold_kind(matrix, added, settings)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_folding_ten_times_the_changes_needs_no_more_memory(settings):
    settings = settings.replace(list_block_rows=50)
    small, large = _fold_peak_bytes(100, settings), _fold_peak_bytes(1_000, settings)
    # Unblocked, the estimates alone (changes x N x 4 bytes) would grow tenfold.
    assert large < 1.5 * small
    assert large < 1_000 * 3_000 * 4
