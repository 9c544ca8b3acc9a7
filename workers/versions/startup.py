"""A worker's start, for its model version: its versioned queues, its registry row, its
heartbeat.

Before the worker consumes anything (``celeryd_after_setup``), the version of the bundle and
settings it runs is worked out (shared.ml.bundle: hashes, no model is built) and, for each of
``ingest``, ``query`` and ``lists`` it was started with, ``<queue>.<version>`` is consumed too.
Once it is ready it registers the version (an upsert: idempotent) and beats every
``presence.BEAT_S`` from a daemon thread until it shuts down. A worker whose bundle cannot be
read consumes its plain queues only; its tasks report why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.db import session_scope
from shared.versions import presence
from shared.versions.registry import VersionInfo, register
from shared.versions.routing import VERSIONED_QUEUES, versioned

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.ml.bundle import Bundle

log = logging.getLogger(__name__)


def version_info(bundle: Bundle, settings: Settings) -> VersionInfo:
    shaping = {
        "model_dir": str(settings.model_dir) if settings.model_dir is not None else None,
        "embedder_weights": bundle.embedder_weights,
        "embedder_input_size": bundle.input_size,
        "detector_test_size": bundle.detector_test_size,
        "score_threshold": bundle.score_threshold if bundle.has_detector else None,
    }
    return VersionInfo(
        version=bundle.model_version,
        bundle_path=str(bundle.root) if bundle.root is not None else None,
        mode=bundle.mode,
        provenance=dict(bundle.manifest.get("provenance") or {}),
        settings=shaping,
    )


def add_version_queues(queues: Any, version: str) -> list[str]:
    """``queues``: the worker's ``app.amqp.queues``; the versioned names it now consumes."""
    added = []
    for name in VERSIONED_QUEUES:
        if name in queues.consume_from:
            queues.select_add(versioned(name, version))
            added.append(versioned(name, version))
    return added


class Presence:
    """The registration and heartbeat of one worker process."""

    def __init__(
        self, settings: Settings, info: VersionInfo, node: str, roles: Sequence[str] = ()
    ) -> None:
        """``roles``: the plain queues the worker consumes (work is routed to a version's
        workers by role)."""
        self.settings, self.info, self.node = settings, info, node
        self.roles = tuple(roles)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with session_scope(self.settings) as session:
            register(session, self.info)
        presence.beat(self.settings, self.info.version, self.node, self.roles)
        self._thread = threading.Thread(target=self._run, name="version-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(presence.BEAT_S):
            try:
                presence.beat(self.settings, self.info.version, self.node, self.roles)
            except Exception:  # a broker blip: the next beat tries again
                log.warning("version heartbeat failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        try:
            presence.leave(self.settings, self.info.version, self.node)
        except Exception:
            log.warning("could not leave the version's worker set", exc_info=True)
