"""Model versions as the operator sees them: list, build, serve (and roll back), retire.

The registry is shared.versions.registry; this module adds the answers' documents and the
refusals: an unknown version is NotFound (``model_not_found``), serving an incomplete one and
retiring the serving one are Conflicts (``model_not_ready``, ``model_serving``). Builds and
purges are work for the workers, sent by name (shared.versions.routing).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from shared.versions import presence, registry
from shared.versions.routing import request_catch_up, send_purge
from web.resources import db, settings
from web.services.errors import Conflict, NotFound, Unavailable

if TYPE_CHECKING:
    from shared.versions.registry import VersionRow

log = logging.getLogger(__name__)


# What a model version can be called (16 hex digits from shared.ml.bundle; tests name theirs):
# anything else names no version, and never reaches the database (NUL cannot be bound).
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
PRIVATE_FIELDS = ("bundle_path", "settings", "provenance")


def state_of(row: VersionRow, complete: bool) -> str:
    """serving | retired | building | complete | registered (docs/architecture.md)."""
    if row.serving:
        return "serving"
    if row.retired:
        return "retired"
    if not row.tracked:
        return "registered"
    return "complete" if complete else "building"


def _document(row: VersionRow, catalogue: int, workers: int) -> dict[str, Any]:
    complete = (
        not row.retired and row.items == catalogue and row.pending_changes == 0 and row.tracked
    )
    return {
        "version": row.version,
        "state": state_of(row, complete),
        "complete": complete,
        "items": row.items,
        "catalogue": catalogue,
        "pending_changes": row.pending_changes,
        "workers": workers,
        "created_at": row.created_at,
        "retired_at": row.retired_at,
        "purged": row.purged,
        "bundle_path": row.bundle_path,
        "mode": row.mode,
        "provenance": row.provenance,
        "settings": row.settings,
    }


def overview() -> dict[str, Any]:
    """``{"serving": ..., "versions": [...]}``: every registered version with its counts."""
    session = db()
    rows = registry.rows(session)
    catalogue = registry.catalogue_size(session)
    serving = next((r.version for r in rows if r.serving), None)
    try:
        workers = presence.live_workers(settings(), [r.version for r in rows])
    except Exception:  # the broker is down: the registry still answers, without live counts
        log.warning("worker heartbeats unreadable", exc_info=True)
        workers = {}
    return {
        "serving": serving,
        "versions": [_document(r, catalogue, workers.get(r.version, 0)) for r in rows],
    }


def version_document(version: str) -> dict[str, Any]:
    _known(version)
    versions: list[dict[str, Any]] = overview()["versions"]
    for doc in versions:
        if doc["version"] == version:
            return doc
    raise NotFound("model_not_found", f"No model version {version!r} is registered.")


def _known(version: str) -> None:
    if not _NAME.fullmatch(version) or not registry.exists(db(), version):
        raise NotFound("model_not_found", f"No model version {version!r} is registered.")


def build(version: str) -> dict[str, Any]:
    """Track ``version`` and have its workers embed every ready item it lacks (idempotent)."""
    session = db()
    _known(version)
    if not registry.track(session, version):
        session.rollback()
        raise Conflict(
            "model_retired",
            f"Model version {version!r} is retired; start its workers again to register it.",
        )
    session.commit()
    try:
        request_catch_up(settings(), version, reason="build asked for")
    except Exception:
        log.exception("could not send the build", extra={"model_version": version})
        raise Unavailable(
            "queue_unavailable", "The build could not be queued; it is tracked, ask again."
        ) from None
    return version_document(version)


def serve(version: str) -> dict[str, Any]:
    """Switch the serving version in one statement; refused while ``version`` is incomplete."""
    session = db()
    _known(version)
    if registry.switch_serving(session, version):
        session.commit()
        log.info("serving version switched", extra={"model_version": version})
        return {"serving": version}
    session.rollback()
    doc = version_document(version)
    raise Conflict(
        "model_not_ready",
        f"Model version {version!r} is not complete: {doc['items']} of {doc['catalogue']} ready"
        f" items embedded, {doc['pending_changes']} changes not yet in its lists.",
        {k: doc[k] for k in ("state", "items", "catalogue", "pending_changes")},
    )


def retire(version: str) -> dict[str, Any]:
    """Retire a version that does not serve; its data is purged by a worker."""
    session = db()
    _known(version)
    outcome = registry.retire(session, version)
    if outcome == "unknown":
        session.rollback()
        raise NotFound("model_not_found", f"No model version {version!r} is registered.")
    if outcome == "serving":
        session.rollback()
        raise Conflict(
            "model_serving",
            f"Model version {version!r} is serving; serve another version first.",
        )
    session.commit()
    try:
        send_purge(settings(), version)
    except Exception:
        log.exception("could not send the purge", extra={"model_version": version})
        raise Unavailable(
            "queue_unavailable", "The version is retired but its purge could not be queued."
        ) from None
    return version_document(version)
