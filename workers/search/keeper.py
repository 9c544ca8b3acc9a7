"""A query worker's matrices kept up with the change log between searches.

Folds run in the lists worker, another process (docs/architecture.md, "Queues and processes"),
so nothing moves a query worker's matrices but its own searches' syncs. A kind nobody searched
for longer than the log's retention (``LIST_CHANGE_RETENTION_S``) would be reloaded whole inside
the next search: this thread syncs every matrix the process holds every ``FOLD_INTERVAL_S``, a
read of the few changes since the last sync. It takes the index lock only for that sync, like a
search does.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from workers.search.index import VectorIndex, get_index
from workers.search.snapshot import read_snapshot

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)


def sync_all(settings: Settings, index: VectorIndex | None = None) -> int:
    """Every matrix the process holds brought up to now, in one snapshot; returns how many."""
    index = index or get_index()
    # The searches' kept connection (it is theirs while the index lock is held), not a new
    # backend every round; the fold state read once for every matrix, as a search does.
    with index.lock, read_snapshot(settings) as conn:
        state = index.fold_state(conn)
        keys = list(index.matrices)
        for version, kind in keys:
            index.sync(conn, version, kind, state)
        return len(keys)


class MatrixKeeper:
    """The daemon thread of :func:`sync_all`, every ``settings.fold_interval_s``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="matrix-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.fold_interval_s):
            try:
                sync_all(self.settings)
            except Exception:  # a database blip: the next round, or the next search, syncs
                log.warning("could not bring the matrices up to date", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
