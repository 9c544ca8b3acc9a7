"""The API client and the ``visrec`` command against the real app over HTTP (no worker: jobs
stay queued unless a test finishes them in the database, as a worker would)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from tests.conftest import TEST_API_KEY
from tests.support.images import jpeg_bytes
from tests.support.servers import serving
from visrec_client import ApiCallError, ApiClient
from visrec_client.cli import main
from visrec_client.folder import FolderError, chunked, find_images

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(app) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / f"cli-{i}.jpg").write_bytes(jpeg_bytes(300 + i))
    (folder / "sub" / "deep-1.png").write_bytes(jpeg_bytes(310))
    (folder / "notes.txt").write_text("not an image suffix")
    return folder


def _jobs(db_session) -> list[tuple[str, int]]:
    db_session.rollback()
    rows = db_session.execute(text("SELECT status, total FROM jobs ORDER BY created_at, total"))
    return [tuple(r) for r in rows]


def test_find_images_keeps_image_suffixes_and_refuses_two_files_for_one_sku(photos):
    assert [p.name for p in find_images(photos)] == ["cli-0.jpg", "cli-1.jpg", "cli-2.jpg"]
    assert [p.name for p in find_images(photos, recursive=True)][-1] == "deep-1.png"
    (photos / "sub" / "cli-1.JPEG").write_bytes(b"x")
    with pytest.raises(FolderError, match="two files give the SKU 'cli-1'"):
        find_images(photos, recursive=True)
    with pytest.raises(FolderError, match="no image files"):
        find_images(_empty(photos))
    with pytest.raises(FolderError, match="is not a folder"):
        find_images(photos / "missing")


def _empty(photos: Path) -> Path:
    empty = photos / "empty"
    empty.mkdir()
    return empty


def test_chunks_are_bounded_by_file_count_and_bytes(tmp_path):
    sizes = [10, 10, 10, 50, 5]
    files = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}.jpg"
        path.write_bytes(b"x" * size)
        files.append(path)
    by_count = [[p.name for p in c] for c in chunked(files, max_files=2, max_bytes=1000)]
    assert by_count == [["f0.jpg", "f1.jpg"], ["f2.jpg", "f3.jpg"], ["f4.jpg"]]
    by_bytes = [[p.name for p in c] for c in chunked(files, max_files=100, max_bytes=30)]
    # A file over the byte bound still goes, alone: the server's per-file cap judges it.
    assert by_bytes == [["f0.jpg", "f1.jpg", "f2.jpg"], ["f3.jpg"], ["f4.jpg"]]


def test_ingest_uploads_the_folder_in_chunks_of_queued_jobs(api, photos, db_session, capsys):
    argv = ["ingest", str(photos), "--api", api, "--api-key", TEST_API_KEY, "--chunk-files", "2"]
    assert main([*argv, "--recursive"]) == 0
    out = capsys.readouterr().out
    assert out.count("job ") == 2 and "2 images -> " in out and "/api/v1/jobs/" in out
    assert _jobs(db_session) == [("queued", 2), ("queued", 2)]
    skus = db_session.execute(text("SELECT sku FROM job_items ORDER BY sku")).scalars().all()
    assert skus == ["cli-0", "cli-1", "cli-2", "deep-1"]


def test_a_refused_call_exits_2_with_the_apis_code_and_message(api, photos, db_session, capsys):
    assert main(["ingest", str(photos), "--api", api, "--api-key", "wrong-key"]) == 2
    err = capsys.readouterr().err
    assert "POST " in err and "-> 401 invalid_api_key: The API key is not valid." in err
    assert _jobs(db_session) == []
    assert main(["similar", "NO-SUCH-SKU", "--api", api]) == 2
    err = capsys.readouterr().err
    assert "404 item_not_found: " in err and "'NO-SUCH-SKU'" in err


def test_an_unreachable_service_exits_2(photos, capsys):
    # Port 9 (discard) on loopback: nothing listens there on a test machine.
    assert main(["ingest", str(photos), "--api", "http://127.0.0.1:9", "--api-key", "k"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_api_call_error_carries_the_apis_details(api):
    with ApiClient(api, TEST_API_KEY) as client, pytest.raises(ApiCallError) as caught:
        client.submit_items(
            [{"sku": "a", "url": "https://shop.example/a.jpg"}, {"sku": "b", "url": "not a url"}]
        )
    error = caught.value
    assert (error.method, error.status, error.code) == ("POST", 422, "validation_error")
    assert error.message in str(error)
    assert "url" in error.details["json"]["items"]["1"]  # which field of which item


def _finish_job(db_session, job_id: str) -> None:
    """What a worker records when it is done with a job: SKU cli-1 failed to decode."""
    key = uuid.UUID(job_id)
    db_session.execute(
        text(
            "UPDATE job_items SET status = CASE WHEN sku = 'cli-1' THEN 'failed' ELSE 'succeeded'"
            " END, reason = CASE WHEN sku = 'cli-1' THEN 'undecodable' END,"
            " error = CASE WHEN sku = 'cli-1' THEN 'not an image' END WHERE job_id = :id"
        ),
        {"id": key},
    )
    db_session.execute(
        text(
            "UPDATE jobs SET"
            " done = (SELECT count(*) FROM job_items WHERE job_id = :id AND status = 'succeeded'),"
            " failed = (SELECT count(*) FROM job_items WHERE job_id = :id AND status = 'failed')"
            " WHERE id = :id"
        ),
        {"id": key},
    )
    db_session.execute(
        text(
            "UPDATE jobs SET status = CASE WHEN failed = 0 THEN 'succeeded' WHEN done = 0"
            " THEN 'failed' ELSE 'partial' END, finished_at = now() WHERE id = :id"
        ),
        {"id": key},
    )
    db_session.commit()


def test_status_reads_a_job_by_id_and_waits_for_it_to_finish(api, photos, db_session, capsys):
    with ApiClient(api, TEST_API_KEY) as client:
        created = client.submit_files(find_images(photos))
        with pytest.raises(TimeoutError, match="jobs still running"):
            client.wait_for_job(created["status_url"], timeout_s=0.3, poll_s=0.1)
    job_id = created["id"]
    assert main(["status", job_id, "--api", api]) == 0
    assert f"job {job_id}: queued, 0 done, 0 failed, 3 pending of 3" in capsys.readouterr().out

    _finish_job(db_session, job_id)
    assert main(["status", created["status_url"], "--api", api, "--wait", "--poll-s", "0.1"]) == 1
    out = capsys.readouterr().out
    assert f"job {job_id}: partial, 2 done, 1 failed, 0 pending of 3" in out
    assert "cli-1: undecodable: not an image" in out
    assert main(["status", job_id, "--api", api, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"]["items"][0]["sku"] == "cli-1"


def test_ingest_wait_reports_every_jobs_outcome(api, photos, db_session, capsys, monkeypatch):
    # No worker runs here: each job is finished, as a worker would, when the client first
    # finds it queued.
    real_job = ApiClient.job

    def job_finished_by_a_worker(self, job, per_page=50):
        doc = real_job(self, job, per_page)
        if doc["status"] == "queued":
            _finish_job(db_session, doc["id"])
            doc = real_job(self, job, per_page)
        return doc

    monkeypatch.setattr(ApiClient, "job", job_finished_by_a_worker)
    argv = ["ingest", str(photos), "--api", api, "--api-key", TEST_API_KEY, "--wait"]
    assert main([*argv, "--chunk-files", "2", "--poll-s", "0.1"]) == 1
    captured = capsys.readouterr()
    assert "2 succeeded, 1 failed, 3 images in 2 job(s)" in captured.out
    assert "cli-1: undecodable: not an image" in captured.out
    assert "3/3" in captured.err  # the progress bar


def test_the_client_imports_neither_the_server_nor_an_ml_framework():
    probe = (
        "import sys, visrec_client.cli, visrec_client.progress;"
        "tops = {m.split('.')[0] for m in sys.modules};"
        "print(sorted(tops & {'shared', 'web', 'workers', 'training', 'demo', 'torch',"
        " 'tensorflow', 'keras', 'detectron2', 'numpy', 'flask', 'celery', 'sqlalchemy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_similar_prints_the_nearest_items_per_kind_and_why_a_kind_is_missing(
    api, db_session, capsys
):
    from tests.recommendations.helpers import add_item
    from workers.tasks.lists import fold_lists

    vectors = {
        "A": {"full": [0.0, 0.0]},
        "B": {"full": [1.0, 0.0], "top": [0.0, 1.0]},
        "C": {"full": [3.0, 0.0], "top": [0.0, 2.0]},
    }
    for sku, kinds in vectors.items():
        add_item(db_session, sku, {k: np.array(v, dtype=np.float32) for k, v in kinds.items()})
    fold_lists.run(reason="test")  # what a query worker does after a batch

    assert main(["similar", "A", "--api", api, "--kinds", "full,top", "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "full: B (1), C (3)"
    assert lines[1].startswith("top: none: ") and "top garment" in lines[1]
    assert main(["similar", "B", "--api", api, "--kinds", "top", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [hit["sku"] for hit in document["results"]["top"]] == ["C"]


def test_uploaded_photos_carry_their_attributes_and_recommendations_filter_on_them(
    api, photos, db_session
):
    from tests.recommendations.helpers import add_item
    from workers.tasks.lists import fold_lists

    images = find_images(photos)
    shop = [{"in_stock": i != 1, "style": f"ST{i // 2}"} for i in range(len(images))]
    with ApiClient(api, api_key=TEST_API_KEY) as client:
        client.submit_files(images, shop)
        with pytest.raises(ValueError, match="2 attribute objects for 3 photos"):
            client.submit_files(images, shop[:2])
    db_session.rollback()
    stored = dict(db_session.execute(text("SELECT sku, attributes FROM items")).all())
    assert stored == {p.stem: a for p, a in zip(images, shop, strict=True)}

    vectors = {"A": [0.0, 0.0], "B": [1.0, 0.0], "C": [2.0, 0.0], "D": [3.0, 0.0]}
    shown = {"A": "ST0", "B": "ST1", "C": "ST1", "D": "ST2"}
    for sku, vector in vectors.items():
        add_item(db_session, sku, {"full": np.array(vector, dtype=np.float32)})
        db_session.execute(
            text("UPDATE items SET attributes = CAST(:a AS jsonb) WHERE sku = :sku"),
            {"a": json.dumps({"in_stock": sku != "B", "style": shown[sku]}), "sku": sku},
        )
    db_session.commit()
    fold_lists.run(reason="test")
    with ApiClient(api) as client:

        def nearest(*rules: tuple[str, str]) -> list[str]:
            document = client.recommendations("A", 3, ["full"], rules)
            return [hit["sku"] for hit in document["results"]["full"]]

        assert nearest() == ["B", "C", "D"]
        assert nearest(("attr.in_stock", "true")) == ["C", "D"]
        assert nearest(("attr.style", "ST1"), ("attr.style", "ST2")) == ["B", "C", "D"]
        assert nearest(("distinct", "style")) == ["B", "D"]
