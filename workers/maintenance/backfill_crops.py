"""Crops for vectors embedded before crops were kept: cut from each item's stored photo.

A top or bottom vector with a box and no ``crop_key`` gets the JPEG ingestion would have stored
(workers.ingestion.crops, the same photo and box give the same bytes). Only Pillow and the
media store are needed, never the models. Safe to run any number of times, alongside
ingestion: only rows still without a crop are read, and a crop is written only onto the row it
was cut for, unchanged (the same box, the item still on the same photo), so a batch that
re-embedded the item meanwhile keeps its own crop. Items are visited in id order, a batch at a
time, each item in its own short transaction (a batch commits many items' rows in its own
order; one item's rows at a time cannot deadlock with it). A photo that is missing or no longer
decodes is counted and left alone; a later pass tries it again.

Run it once after upgrading: ``python -m workers.maintenance.backfill_crops`` here, with a
progress bar, or with ``--enqueue`` as the ``workers.tasks.maintenance.backfill_crops`` task on
the ``default`` queue, which does ``max_items`` items and sends itself on for the rest (README,
"Garment crops").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from shared.db import rowcount, session_scope
from shared.images import ImageRejected, decode_rgb
from shared.media import MediaStore
from shared.vocabulary import CROP_KINDS
from workers.ingestion.crops import store_crops

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH_ITEMS = 100
# Items one task does before it sends itself on: it shares the ``default`` queue with job
# dispatch, which must not wait behind a whole catalogue.
DEFAULT_TASK_ITEMS = 2000

_CROP_KINDS = [kind.value for kind in CROP_KINDS]

# Rows that need a crop. Spliced into queries below (their noqa: S608): a constant, every value
# in it a bound parameter.
_WANTED = "e.crop_key IS NULL AND e.box IS NOT NULL AND e.kind = ANY(:kinds)"

_BATCH_SQL = text(
    f"""
    WITH batch AS (
        SELECT DISTINCT e.item_id FROM embeddings e
         WHERE {_WANTED} AND e.item_id > :after
         ORDER BY e.item_id LIMIT :n
    )
    SELECT e.id, e.item_id, e.kind, e.box, i.media_key
      FROM batch JOIN embeddings e ON e.item_id = batch.item_id
      JOIN items i ON i.id = e.item_id
     WHERE {_WANTED}
     ORDER BY e.item_id, e.id
    """  # noqa: S608
)

# The row is still the one the crop was cut for: no crop yet, the same box, the item still on
# the photo it was cut from.
_FILL_SQL = text(
    """
    UPDATE embeddings e SET crop_key = :crop_key, updated_at = now()
     WHERE e.id = :id AND e.crop_key IS NULL AND e.box = CAST(:box AS double precision[])
       AND EXISTS (SELECT 1 FROM items i WHERE i.id = e.item_id AND i.media_key = :media_key)
    """
)


@dataclass
class BackfillReport:
    filled: int = 0  # rows that got their crop
    changed: int = 0  # rows re-embedded or deleted meanwhile: left as they are now
    missing_photo: int = 0  # rows whose item's photo is not in the media store
    undecodable: int = 0  # rows whose item's stored photo no longer decodes
    items: int = 0
    last_item_id: int = 0  # the next pass starts after this item
    finished: bool = False  # no item after ``last_item_id`` needs a crop

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Row:
    id: int
    kind: str
    box: list[float]


@dataclass
class _ItemWork:
    item_id: int
    media_key: str | None
    rows: list[_Row] = field(default_factory=list)


def rows_without_crops(settings: Settings) -> int:
    """How many top/bottom vectors have a box and no crop yet."""
    with session_scope(settings) as session:
        query = text(f"SELECT count(*) FROM embeddings e WHERE {_WANTED}")  # noqa: S608
        count = session.scalar(query, {"kinds": _CROP_KINDS})
    return int(count or 0)


def _next_batch(settings: Settings, after: int, n: int) -> list[_ItemWork]:
    with session_scope(settings) as session:
        rows = session.execute(_BATCH_SQL, {"kinds": _CROP_KINDS, "after": after, "n": n}).all()
    items: dict[int, _ItemWork] = {}
    for row in rows:
        work = items.setdefault(int(row.item_id), _ItemWork(int(row.item_id), row.media_key))
        work.rows.append(_Row(int(row.id), str(row.kind), [float(v) for v in row.box]))
    return list(items.values())


def _fill_item(
    settings: Settings, media: MediaStore, work: _ItemWork, report: BackfillReport
) -> None:
    try:
        if work.media_key is None:
            raise FileNotFoundError(work.item_id)
        photo = media.read(work.media_key)
    except (KeyError, FileNotFoundError):
        report.missing_photo += len(work.rows)
        log.warning("no stored photo to cut crops from", extra={"item_id": work.item_id})
        return
    try:
        rgb = decode_rgb(photo, settings.max_image_pixels)
    except ImageRejected as exc:
        report.undecodable += len(work.rows)
        log.warning(
            "stored photo does not decode; no crops cut",
            extra={"item_id": work.item_id, "error": exc.message},
        )
        return
    # Crops are stored before the rows naming them commit, as ingestion does: media retention's
    # grace period covers the gap. Keyed by row: an item may hold the same kind in two versions.
    keys = store_crops(media, rgb, {row.id: row.box for row in work.rows}, settings.crop_max_side)
    with session_scope(settings) as session:
        for row in work.rows:
            params = {
                "id": row.id,
                "crop_key": keys[row.id],
                "box": row.box,
                "media_key": work.media_key,
            }
            if rowcount(session.execute(_FILL_SQL, params)):
                report.filled += 1
            else:
                report.changed += 1


def backfill_pass(
    settings: Settings,
    *,
    after: int = 0,
    max_items: int | None = None,
    batch_items: int = DEFAULT_BATCH_ITEMS,
    on_progress: Callable[[int], None] | None = None,
) -> BackfillReport:
    """Crops for the items after item id ``after`` that need them, at most ``max_items`` of
    them (None: all). ``on_progress`` is called with the number of rows each batch handled."""
    report = BackfillReport(last_item_id=after)
    media = MediaStore(settings.media_root)
    batch_items = max(1, batch_items)
    while max_items is None or report.items < max_items:
        n = batch_items if max_items is None else min(batch_items, max_items - report.items)
        batch = _next_batch(settings, report.last_item_id, n)
        if not batch:
            report.finished = True
            break
        for work in batch:
            _fill_item(settings, media, work, report)
        report.items += len(batch)
        report.last_item_id = batch[-1].item_id
        log.info("crops backfilled", extra=report.as_dict())
        if on_progress is not None:
            on_progress(sum(len(work.rows) for work in batch))
    return report


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workers.maintenance.backfill_crops",
        description="Store the garment crop of every top/bottom vector that has a box and no"
        " crop yet, cut from its item's stored photo. Safe to run again.",
    )
    parser.add_argument(
        "--enqueue",
        action="store_true",
        help="send the backfill task to the 'default' queue (a worker does it) instead of"
        " running it here",
    )
    parser.add_argument(
        "--batch-items",
        type=int,
        default=DEFAULT_BATCH_ITEMS,
        help=f"items read per batch (default {DEFAULT_BATCH_ITEMS})",
    )
    parser.add_argument(
        "--items-per-task",
        type=int,
        default=DEFAULT_TASK_ITEMS,
        help=f"with --enqueue: items one task does before it sends itself on"
        f" (default {DEFAULT_TASK_ITEMS})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; the process's settings say which database and media store."""
    from shared.config import get_settings

    args = _parse(argv)
    settings = get_settings()
    if args.enqueue:
        from shared import task_names
        from shared.queueing import QUEUE_DEFAULT, task_sender

        sent = task_sender(settings).send_task(
            task_names.BACKFILL_CROPS,
            kwargs={
                "after": 0,
                "batch_items": args.batch_items,
                "max_items": args.items_per_task,
            },
            queue=QUEUE_DEFAULT,
            ignore_result=True,
        )
        print(f"backfill task {sent.id} sent to the '{QUEUE_DEFAULT}' queue; workers log progress")
        return 0

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Log lines are written above the bar instead of through it.
    with (
        logging_redirect_tqdm(),
        tqdm(total=rows_without_crops(settings), unit="crop", desc="crops") as bar,
    ):
        report = backfill_pass(settings, batch_items=args.batch_items, on_progress=bar.update)
    print(
        f"crops stored: {report.filled}; items visited: {report.items}; vectors changed"
        f" meanwhile: {report.changed}; without a stored photo: {report.missing_photo};"
        f" photo does not decode: {report.undecodable}"
    )
    return 0


if __name__ == "__main__":
    from shared.config import get_settings
    from shared.logs import configure_logging

    configure_logging(get_settings().log_level, json_lines=False)
    sys.exit(main())
