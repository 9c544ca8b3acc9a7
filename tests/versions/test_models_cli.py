"""``visrec models`` against the real app over HTTP (vectors written straight to PostgreSQL,
the build's completion stood in for by writing B's vectors and folding in this process)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from shared.models import Embedding
from shared.vectors import encode
from shared.versions import registry
from tests.conftest import TEST_API_KEY
from tests.recommendations.helpers import add_item
from tests.support.servers import serving
from visrec_client.cli import main

A, B = "cli-version-a", "cli-version-b"


@pytest.fixture
def api(app) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def two_versions(db_session) -> list[int]:
    rng = np.random.default_rng(11)
    ids = [
        add_item(db_session, f"m-{i}", {"full": rng.standard_normal(8).astype(np.float32)}, A)
        for i in range(3)
    ]
    registry.claim_serving_if_none(db_session, A)
    registry.ensure_known(db_session, B)
    db_session.commit()
    return ids


def _complete_b(db_session, ids: list[int]) -> None:
    from workers.tasks.lists import fold_lists

    rng = np.random.default_rng(12)
    for item_id in ids:
        vector = encode(rng.standard_normal(8).astype(np.float32))
        db_session.add(
            Embedding(item_id=item_id, kind="full", model_version=B, dim=8, vector=vector)
        )
    db_session.commit()
    fold_lists.run(reason="test")


def test_models_table_build_wait_serve_and_retire(api, db_session, two_versions, capsys):
    assert main(["models", "--api", api]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "version",
        "state",
        "complete",
        "items",
        "catalogue",
        "workers",
        "created_at",
    ]
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in lines}
    assert rows[A].startswith("*") and " serving " in rows[A]
    assert " registered " in rows[B] and " False " in rows[B]

    key = ["--api", api, "--api-key", TEST_API_KEY]
    assert main(["models", "serve", B, *key]) == 2
    assert "409 model_not_ready" in capsys.readouterr().err
    # The build "completes" while --wait polls: the command returns once B is complete.
    finisher = threading.Timer(0.5, _complete_b, args=(db_session, two_versions))
    finisher.start()
    try:
        assert main(["models", "build", B, "--wait", "--poll-s", "0.1", *key]) == 0
    finally:
        finisher.join()
    out = capsys.readouterr()
    assert f"{B}: complete, 3 of 3 items" in out.out and "build" in out.err
    assert main(["models", "serve", B, *key]) == 0
    assert capsys.readouterr().out.strip() == f"serving {B}"
    assert main(["models", "retire", B, *key]) == 2
    assert "409 model_serving" in capsys.readouterr().err
    assert main(["models", "retire", A, *key]) == 0
    assert f"{A}: retired" in capsys.readouterr().out
    assert main(["models", "build", "nope", *key]) == 2
    assert "404 model_not_found" in capsys.readouterr().err
