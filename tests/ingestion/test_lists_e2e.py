"""Through a real worker: ingest, re-ingest with new photos, delete; every item's answer equals
brute force over PostgreSQL's vectors once the worker has folded the last job's changes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import func, select, text

from shared.models import ListChange
from tests.ingestion.helpers import wait_for_job
from tests.support.images import jpeg_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _vectors(db_session) -> list[tuple[int, str, np.ndarray]]:
    db_session.rollback()
    rows = db_session.execute(
        text(
            "SELECT i.id, i.sku, e.vector FROM items i JOIN embeddings e ON e.item_id = i.id"
            " WHERE e.kind = 'full'"
        )
    ).all()
    return [(r[0], r[1], np.frombuffer(r[2], dtype="<f4")) for r in rows]


def _brute_force(rows, item_id: int, k: int) -> list[str]:
    mine = next(r for r in rows if r[0] == item_id)
    others = [r for r in rows if r[0] != item_id]
    d = [float(np.sum((r[2].astype(np.float64) - mine[2].astype(np.float64)) ** 2)) for r in others]
    order = sorted(range(len(others)), key=lambda i: (d[i], others[i][0]))[:k]
    return [others[i][1] for i in order]


def _pending(db_session) -> int:
    db_session.rollback()
    return db_session.scalar(
        select(func.count()).select_from(ListChange).where(ListChange.fold_id.is_(None))
    )


def _wait_folded(db_session, timeout_s: float = 120.0) -> None:
    """Until the worker has folded every change into the lists (a deadline, not a timing)."""
    wait_until(
        lambda: _pending(db_session) == 0,
        timeout_s,
        message=lambda: f"every change folded; {_pending(db_session)} still unfolded",
    )


def _assert_all_exact(client, db_session, k: int = 5) -> None:
    rows = _vectors(db_session)
    for item_id, sku, _ in rows:
        response = client.get(f"/api/v1/items/{sku}/recommendations?k={k}&kinds=full")
        assert response.status_code == 200, response.get_json()
        got = [h["sku"] for h in response.get_json()["results"]["full"]]
        assert got == _brute_force(rows, item_id, k), sku


def _post(client, auth_headers, seeds: dict[str, int]):
    files = {
        "images": [(io.BytesIO(jpeg_bytes(seed)), f"{sku}.jpg") for sku, seed in seeds.items()]
    }
    response = client.post(
        "/api/v1/jobs", data=files, headers=auth_headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202
    return wait_for_job(client, response.get_json()["id"])


def test_lists_follow_ingest_reingest_and_delete_through_a_worker(
    make_app, ingest_settings, auth_headers, start_worker, db_session
):
    settings = ingest_settings.replace(query_timeout_s=60.0)
    client = make_app(settings).test_client()
    start_worker(settings)
    job = _post(client, auth_headers, {f"sku-{i:02d}": i for i in range(12)})
    assert job["status"] == "succeeded"
    _wait_folded(db_session)
    _assert_all_exact(client, db_session)

    # New photos for three items and two new items; ask at once, then after the fold.
    job = _post(
        client,
        auth_headers,
        {"sku-01": 101, "sku-02": 102, "sku-03": 103, "new-a": 7, "new-b": 200},
    )
    assert job["status"] == "succeeded"
    _assert_all_exact(client, db_session)  # lists + changes, or the worker's full search
    _wait_folded(db_session)
    _assert_all_exact(client, db_session)

    for sku in ("sku-04", "new-b"):
        assert client.delete(f"/api/v1/items/{sku}", headers=auth_headers).status_code == 204
    _assert_all_exact(client, db_session)
    _wait_folded(db_session)
    _assert_all_exact(client, db_session)
    assert client.get("/api/v1/items/sku-04/recommendations").status_code == 404
