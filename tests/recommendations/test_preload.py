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
