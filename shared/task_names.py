"""Task names: the contract between the web tier (which sends by name) and the workers.

Each name is where the task lives: module path, then function (``workers/tasks/lists.py``
``fold_lists`` is ``workers.tasks.lists.fold_lists``).

``PREVIOUS_NAMES``: each task's name before this release. Workers still run a message sent under
it (workers.tasks.registration registers the task under both, with the same options, and
shared.queueing routes both to the same queue), so tasks queued before an upgrade, and those an
older web still sends during one, are not lost. Drop them in the release after.
"""

from __future__ import annotations

START_JOB = "workers.tasks.ingest.start_job"
INGEST_BATCH = "workers.tasks.ingest.process_batch"
SEARCH_PHOTO = "workers.tasks.query.search_photo"
SEARCH_ITEM = "workers.tasks.query.search_item"
FOLD_LISTS = "workers.tasks.lists.fold_lists"
RELOAD_LISTS_CACHE = "workers.tasks.lists.reload_cache"
# New in this release: they have no previous name.
REPAIR_LISTS_CACHE = "workers.tasks.lists.repair_cache"
CATCH_UP_VERSION = "workers.tasks.versions.catch_up"
PURGE_VERSION = "workers.tasks.versions.purge_version"
RESUME_BUILDS = "workers.tasks.versions.resume_builds"
SWEEP_STALLED = "workers.tasks.maintenance.sweep_stalled"
PRUNE_MEDIA = "workers.tasks.maintenance.prune_media"
BACKFILL_CROPS = "workers.tasks.maintenance.backfill_crops"

PREVIOUS_NAMES: dict[str, str] = {
    START_JOB: "workers.ingest.start_job",
    INGEST_BATCH: "workers.ingest.process_batch",
    SEARCH_PHOTO: "workers.query.search_photo",
    SEARCH_ITEM: "workers.query.search_item",
    FOLD_LISTS: "workers.lists.fold",
    RELOAD_LISTS_CACHE: "workers.lists.reload_cache",
    SWEEP_STALLED: "workers.maintenance.sweep_stalled",
    PRUNE_MEDIA: "workers.maintenance.prune_media",
    BACKFILL_CROPS: "workers.maintenance.backfill_crops",
}


def names_of(name: str) -> tuple[str, ...]:
    """``name`` and, if it had one, the task's previous name."""
    previous = PREVIOUS_NAMES.get(name)
    return (name,) if previous is None else (name, previous)
