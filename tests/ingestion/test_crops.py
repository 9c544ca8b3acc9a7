"""Garment crops kept as JPEGs: written by a batch, served beside the vectors, backfilled for
items embedded before crops were kept."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from shared import task_names
from shared.media import MediaStore
from shared.models import Embedding, Item
from shared.queueing import QUEUE_DEFAULT
from tests.ingestion.test_tasks import CountingPipeline, run_all, submit_files
from tests.support.images import encode_jpeg
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess
from workers.maintenance import backfill_crops
from workers.maintenance.backfill_crops import backfill_pass

TOP_BOX = (1.0, 2.0, 30.0, 40.0)  # 29 x 38 pixels
BOTTOM_BOX = (10.5, 50.2, 70.0, 90.7)  # partial edge pixels included: 60 x 41 pixels


@pytest.fixture
def app(ingest_settings, make_app):
    return make_app(ingest_settings)


def gradient_jpeg(width: int = 80, height: int = 96, shift: int = 0) -> bytes:
    """Red grows with x and green with y: a crop's corners say where it was cut."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 2 + shift, y * 2, np.full_like(x, 128)], axis=-1).clip(0, 255)
    return encode_jpeg(rgb.astype(np.uint8), quality=95)


class BoxPipeline(CountingPipeline):
    """The real embedder plus made-up top and bottom boxes, standing in for a trained detector."""

    def __init__(self, settings, boxes=None) -> None:
        super().__init__(settings)
        self.boxes = {"top": TOP_BOX, "bottom": BOTTOM_BOX} if boxes is None else boxes

    def process(self, images):
        from shared.ml.pipeline import Crop

        results = super().process(images)
        for result in results:
            if result.ok:
                for n, (kind, box) in enumerate(self.boxes.items(), start=1):
                    result.vectors[kind] = np.roll(result.vectors["full"], n)
                    result.crops[kind] = Crop(kind, box, 2 if kind == "top" else 8, kind, 0.9)
        return results


def rows_of(db_session, sku: str) -> dict[str, Embedding]:
    db_session.rollback()
    rows = db_session.scalars(select(Embedding).join(Item).where(Item.sku == sku)).all()
    return {row.kind: row for row in rows}


def open_crop(settings, key: str) -> Image.Image:
    picture = Image.open(io.BytesIO(MediaStore(settings.media_root).read(key)))
    picture.load()
    return picture


def pixel_size(box) -> tuple[int, int]:
    """The box's size in whole pixels, partial edge pixels included (as the crop cuts)."""
    return math.ceil(box[2]) - math.floor(box[0]), math.ceil(box[3]) - math.floor(box[1])


def assert_shape_of(picture: Image.Image, box, max_side: int) -> None:
    width, height = pixel_size(box)
    assert picture.format == "JPEG"
    assert max(picture.size) == min(max_side, max(width, height))
    # The box's aspect ratio, to the pixel the shrink rounds to.
    assert abs(picture.width - picture.height * width / height) <= 1.0, (picture.size, box)


def test_a_batch_stores_each_crop_as_a_jpeg_of_its_box(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(crop_max_side=256)
    job = submit_files(client, auth_headers, [("g.jpg", gradient_jpeg())])
    run_all(settings, db_session, job, BoxPipeline(settings))
    rows = rows_of(db_session, "g")
    assert rows["full"].crop_key is None
    top, bottom = (
        open_crop(settings, rows["top"].crop_key),
        open_crop(settings, rows["bottom"].crop_key),
    )
    # Smaller than CROP_MAX_SIDE: kept pixel for pixel, the box's own size.
    assert top.size == (29, 38) and bottom.size == (60, 41)
    pixels = np.asarray(top.convert("RGB"), dtype=np.int16)
    # Its corners are the photo's pixels at the box's corners (red = 2x, green = 2y).
    assert np.abs(pixels[0, 0] - (2 * 1, 2 * 2, 128)).max() <= 6
    assert np.abs(pixels[-1, -1] - (2 * 29, 2 * 39, 128)).max() <= 6

    # The item document gives each vector's box and crop, served as a JPEG.
    item = client.get("/api/v1/items/g", headers=auth_headers).get_json()
    vectors = {v["kind"]: v for v in item["vectors"]}
    assert (vectors["full"]["box"], vectors["full"]["crop_url"]) == (None, None)
    assert vectors["top"]["box"] == list(TOP_BOX)
    assert vectors["top"]["crop_url"] == f"/media/{rows['top'].crop_key}"
    served = client.get(vectors["bottom"]["crop_url"])
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.data == MediaStore(settings.media_root).read(rows["bottom"].crop_key)


def test_crops_are_shrunk_to_the_long_side_setting_keeping_their_shape(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings.replace(crop_max_side=16)
    job = submit_files(client, auth_headers, [("s.jpg", gradient_jpeg())])
    run_all(settings, db_session, job, BoxPipeline(settings))
    rows = rows_of(db_session, "s")
    assert_shape_of(open_crop(settings, rows["top"].crop_key), TOP_BOX, 16)
    assert_shape_of(open_crop(settings, rows["bottom"].crop_key), BOTTOM_BOX, 16)


def test_a_new_photo_replaces_the_crop_and_the_same_photo_keeps_it(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings
    job = submit_files(client, auth_headers, [("r.jpg", gradient_jpeg())])
    run_all(settings, db_session, job, BoxPipeline(settings))
    first = rows_of(db_session, "r")["top"].crop_key
    job = submit_files(client, auth_headers, [("r.jpg", gradient_jpeg(shift=40))])
    run_all(settings, db_session, job, BoxPipeline(settings))
    second = rows_of(db_session, "r")["top"]
    assert second.crop_key not in (None, first)
    red = np.asarray(open_crop(settings, second.crop_key).convert("RGB"), dtype=np.int16)[0, 0, 0]
    assert abs(red - (2 * 1 + 40)) <= 6  # cut from the new photo
    # Resubmitting the same photo does no model work and keeps the crop.
    job = submit_files(client, auth_headers, [("r.jpg", gradient_jpeg(shift=40))])
    assert run_all(settings, db_session, job, BoxPipeline(settings)).skipped == 1
    assert rows_of(db_session, "r")["top"].crop_key == second.crop_key


@pytest.fixture(scope="module")
def test_bundle(tmp_path_factory):
    from tests.support.bundles import make_test_bundle

    return make_test_bundle(
        tmp_path_factory.mktemp("bundle"), detector=True, input_size=64, test_size=128, seed=0
    )


def test_a_batch_with_a_detector_bundle_keeps_the_detected_boxes_as_crops(
    client, auth_headers, ingest_settings, db_session, test_bundle
):
    from training.synthetic import make_catalogue_sample

    # Threshold 0: the random detector's best boxes become crops.
    settings = ingest_settings.replace(
        model_dir=test_bundle.root,
        embedder_weights=None,
        embedder_input_size=None,
        score_threshold=0.0,
        crop_max_side=48,
    )
    photos = []
    for index in (1, 2):
        image, _ = make_catalogue_sample(seed=3, index=index, size=192)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        photos.append((f"look-{index}.jpg", buffer.getvalue()))
    job = submit_files(client, auth_headers, photos)
    report = run_all(settings, db_session, job)
    assert report.succeeded == 2
    for name, _ in photos:
        sku = name.removesuffix(".jpg")
        rows = rows_of(db_session, sku)
        assert set(rows) == {"full", "top", "bottom"} and rows["full"].crop_key is None
        vectors = {
            v["kind"]: v
            for v in client.get(f"/api/v1/items/{sku}", headers=auth_headers).get_json()["vectors"]
        }
        for kind in ("top", "bottom"):
            assert rows[kind].box is not None and rows[kind].crop_key is not None
            assert_shape_of(open_crop(settings, rows[kind].crop_key), rows[kind].box, 48)
            assert vectors[kind]["box"] == rows[kind].box
            served = client.get(vectors[kind]["crop_url"])
            assert served.status_code == 200 and served.mimetype == "image/jpeg"


# ----------------------------------------------------------------------------- the backfill


def _forget_crops(settings, db_session) -> dict[tuple[str, str], str]:
    """Make the catalogue look embedded before crops were kept: no keys, no files. Returns what
    ingestion had stored, (sku, kind) -> key."""
    db_session.rollback()
    stored = {
        (sku, kind): key
        for sku, kind, key in db_session.execute(
            select(Item.sku, Embedding.kind, Embedding.crop_key)
            .join(Item)
            .where(Embedding.crop_key.is_not(None))
        )
    }
    store = MediaStore(settings.media_root)
    for key in set(stored.values()):
        store.path_for(key).unlink()
    db_session.execute(text("UPDATE embeddings SET crop_key = NULL"))
    db_session.commit()
    return stored


def _crop_state(db_session) -> list[tuple]:
    db_session.rollback()
    return list(
        db_session.execute(
            select(Embedding.id, Embedding.crop_key, Embedding.updated_at).order_by(Embedding.id)
        )
    )


def test_the_backfill_cuts_the_crops_ingestion_would_have_and_a_second_run_changes_nothing(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings
    photos = [(f"b{i}.jpg", gradient_jpeg(shift=i * 10)) for i in range(5)]
    job = submit_files(client, auth_headers, photos)
    run_all(settings, db_session, job, BoxPipeline(settings))
    # One more item with only a top crop, and one whose photo went missing from the store.
    job = submit_files(
        client,
        auth_headers,
        [("only-top.jpg", gradient_jpeg(shift=99)), ("lost.jpg", gradient_jpeg(shift=77))],
    )
    run_all(settings, db_session, job, BoxPipeline(settings, {"top": TOP_BOX}))
    lost = client.get("/api/v1/items/lost").get_json()["image_url"].rsplit("/", 1)[1]
    stored = _forget_crops(settings, db_session)
    assert len(stored) == 5 * 2 + 1 + 1
    MediaStore(settings.media_root).path_for(lost).unlink()
    assert backfill_crops.rows_without_crops(settings) == 12

    seen: list[int] = []
    report = backfill_pass(settings, batch_items=2, on_progress=seen.append)

    assert (report.filled, report.missing_photo, report.changed, report.items) == (11, 1, 0, 7)
    assert report.finished and sum(seen) == 12 and len(seen) == 4  # batches of 2 items
    db_session.rollback()
    now = {
        (sku, kind): key
        for sku, kind, key in db_session.execute(
            select(Item.sku, Embedding.kind, Embedding.crop_key).join(Item)
        )
        if kind != "full"
    }
    # The same photo and box give the same bytes: exactly the keys ingestion had stored.
    assert {k: v for k, v in now.items() if k[0] != "lost"} == {
        k: v for k, v in stored.items() if k[0] != "lost"
    }
    assert now[("lost", "top")] is None
    for key in now.values():
        if key is not None:
            assert open_crop(settings, key).format == "JPEG"
    body = client.get("/api/v1/items/b3", headers=auth_headers).get_json()
    assert {v["kind"]: v["crop_url"] for v in body["vectors"]} == {
        "full": None,
        "top": f"/media/{stored[('b3', 'top')]}",
        "bottom": f"/media/{stored[('b3', 'bottom')]}",
    }

    before = _crop_state(db_session)
    again = backfill_pass(settings)
    assert (again.filled, again.changed, again.missing_photo) == (0, 0, 1)
    assert _crop_state(db_session) == before


def test_the_backfill_leaves_a_row_that_changed_after_it_was_read(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings
    job = submit_files(client, auth_headers, [("moved.jpg", gradient_jpeg())])
    run_all(settings, db_session, job, BoxPipeline(settings))
    _forget_crops(settings, db_session)
    (work,) = backfill_crops._next_batch(settings, 0, 10)
    # Re-detected meanwhile (a new box, no crop yet): the crop cut from the old box must not land.
    db_session.execute(
        text("UPDATE embeddings SET box = ARRAY[0.0, 0.0, 5.0, 5.0] WHERE kind = 'top'")
    )
    db_session.commit()
    report = backfill_crops.BackfillReport()
    backfill_crops._fill_item(settings, MediaStore(settings.media_root), work, report)
    assert (report.filled, report.changed) == (1, 1)
    rows = rows_of(db_session, "moved")
    assert rows["top"].crop_key is None and rows["bottom"].crop_key is not None


def test_the_backfill_cuts_each_version_its_own_box(
    client, auth_headers, ingest_settings, db_session
):
    settings = ingest_settings
    job = submit_files(client, auth_headers, [("two.jpg", gradient_jpeg())])
    run_all(settings, db_session, job, BoxPipeline(settings, {"top": TOP_BOX}))
    _forget_crops(settings, db_session)
    # The same item's top in an older model version, detected elsewhere in the photo.
    db_session.execute(
        text(
            "INSERT INTO embeddings (item_id, kind, model_version, dim, vector, box)"
            " SELECT item_id, kind, 'older', dim, vector, CAST(:box AS double precision[])"
            " FROM embeddings WHERE kind = 'top'"
        ),
        {"box": list(BOTTOM_BOX)},
    )
    db_session.commit()
    assert backfill_pass(settings).filled == 2
    db_session.rollback()
    sizes = {
        version: open_crop(settings, key).size
        for version, key in db_session.execute(
            select(Embedding.model_version, Embedding.crop_key).where(Embedding.kind == "top")
        )
    }
    assert sizes == {"older": (60, 41), CountingPipeline(settings).model_version: (29, 38)}


def test_the_command_line_backfills_with_a_summary(
    client, auth_headers, ingest_settings, db_session, capsys
):
    settings = ingest_settings
    job = submit_files(client, auth_headers, [("cli.jpg", gradient_jpeg())])
    run_all(settings, db_session, job, BoxPipeline(settings))
    _forget_crops(settings, db_session)
    assert backfill_crops.main([]) == 0
    assert "crops stored: 2; items visited: 1;" in capsys.readouterr().out
    assert all(row.crop_key for kind, row in rows_of(db_session, "cli").items() if kind != "full")


@pytest.mark.e2e
def test_the_enqueued_backfill_task_runs_on_the_default_queue_in_slices(
    client, auth_headers, ingest_settings, db_session, worker_log
):
    settings = ingest_settings.replace(preload_models=False)
    job = submit_files(
        client, auth_headers, [(f"w{i}.jpg", gradient_jpeg(shift=i)) for i in range(3)]
    )
    run_all(settings, db_session, job, BoxPipeline(settings))
    stored = _forget_crops(settings, db_session)
    # Only the default queue's worker: the task is routed there by its name.
    worker = WorkerProcess(settings, worker_log, queues=(QUEUE_DEFAULT,))
    worker.start()
    try:
        # One item per task: the first sends itself on twice, then finds nothing more.
        assert backfill_crops.main(["--enqueue", "--items-per-task", "1"]) == 0

        def filled() -> bool:
            db_session.rollback()
            count = db_session.scalar(
                select(func.count()).select_from(Embedding).where(Embedding.crop_key.is_not(None))
            )
            return count == len(stored)

        def tasks_done() -> int:
            done = rf"{re.escape(task_names.BACKFILL_CROPS)}\[[^\]]+\] succeeded"
            return len(re.findall(done, worker_log.read_text()))

        wait_until(filled, 60, interval=0.2, message="every crop backfilled by the worker")
        # Three slices of one item each, then the one that finds nothing left and stops.
        wait_until(lambda: tasks_done() >= 4, 30, interval=0.2, message="the last slice")
    finally:
        worker.stop()
    assert tasks_done() == 4
