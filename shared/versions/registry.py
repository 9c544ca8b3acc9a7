"""The ``model_versions`` registry and the one-row ``model_serving`` pointer, in SQL.

Both tiers use it: workers register the version they were started with and claim serving on an
empty system (inside the batch commit that embedded the first item); the web reads, builds,
switches and retires. Every step is one statement or one short transaction, so two callers at
once cannot leave two versions serving or a half-switched pointer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from shared.db import rowcount

if TYPE_CHECKING:
    from sqlalchemy import Result
    from sqlalchemy.orm import Session

# Ready items that have no whole-photo vector of :v (every embedded item has one).
_MISSING_ITEMS = """
    SELECT 1 FROM items i
     WHERE i.status = 'ready'
       AND NOT EXISTS (SELECT 1 FROM embeddings e
                        WHERE e.item_id = i.id AND e.model_version = :v AND e.kind = 'full')"""
_PENDING_CHANGES = "SELECT 1 FROM list_changes WHERE fold_id IS NULL AND model_version = :v"
# Complete: registered and not retired, every ready item embedded, every change folded.
_COMPLETE = f"""
    EXISTS (SELECT 1 FROM model_versions WHERE version = :v AND retired_at IS NULL)
    AND NOT EXISTS ({_MISSING_ITEMS})
    AND NOT EXISTS ({_PENDING_CHANGES})"""  # noqa: S608 - constants only


@dataclass(frozen=True)
class VersionInfo:
    """What a worker knows of its own version when it starts (shared.ml.bundle.Bundle)."""

    version: str
    bundle_path: str | None
    mode: str
    provenance: Mapping[str, Any]
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class VersionRow:
    version: str
    serving: bool
    tracked: bool
    retired: bool
    purged: bool
    items: int
    pending_changes: int
    bundle_path: str | None
    mode: str | None
    provenance: dict[str, Any]
    settings: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None


def register(session: Session, info: VersionInfo) -> None:
    """Upsert the version a worker starts with. A retired version whose workers start again is
    registered anew (its data was purged; it must be built again before it can serve)."""
    session.execute(
        text(
            "INSERT INTO model_versions (version, bundle_path, mode, provenance, settings)"
            " VALUES (:v, :path, :mode, CAST(:prov AS jsonb), CAST(:settings AS jsonb))"
            " ON CONFLICT (version) DO UPDATE SET bundle_path = excluded.bundle_path,"
            " mode = excluded.mode, provenance = excluded.provenance,"
            " settings = excluded.settings,"
            " tracked_at = CASE WHEN model_versions.retired_at IS NULL"
            "   THEN model_versions.tracked_at END,"
            " retired_at = NULL, purged_at = NULL"
        ),
        {
            "v": info.version,
            "path": info.bundle_path,
            "mode": info.mode,
            "prov": json.dumps(dict(info.provenance), default=str),
            "settings": json.dumps(dict(info.settings), default=str),
        },
    )


def ensure_known(session: Session, version: str) -> None:
    """The version has a row (a batch run outside a started worker, as tests do)."""
    session.execute(
        text("INSERT INTO model_versions (version) VALUES (:v) ON CONFLICT (version) DO NOTHING"),
        {"v": version},
    )


def claim_serving_if_none(session: Session, version: str) -> bool:
    """On an empty system the first version that embeds an item serves. Called inside the
    batch's own transaction; the singleton's primary key makes two first batches of two
    versions race safely (the second finds the row and does nothing). True if it now serves."""
    ensure_known(session, version)
    claimed = rowcount(
        session.execute(
            text(
                "INSERT INTO model_serving (id, version) VALUES (1, :v) ON CONFLICT (id) DO NOTHING"
            ),
            {"v": version},
        )
    )
    if claimed:
        session.execute(
            text(
                "UPDATE model_versions SET tracked_at = coalesce(tracked_at, now())"
                " WHERE version = :v"
            ),
            {"v": version},
        )
    return bool(claimed)


def exists(session: Session, version: str) -> bool:
    found = session.execute(text("SELECT 1 FROM model_versions WHERE version = :v"), {"v": version})
    return found.first() is not None


def serving_version(session: Session) -> str | None:
    return session.execute(text("SELECT version FROM model_serving WHERE id = 1")).scalar()


def tracked_versions(session: Session) -> list[str]:
    """Versions every ingested item must reach: serving, building or kept for a rollback."""
    return list(
        session.scalars(
            text(
                "SELECT version FROM model_versions"
                " WHERE retired_at IS NULL"
                " AND (tracked_at IS NOT NULL OR version IN (SELECT version FROM model_serving))"
                " ORDER BY version"
            )
        )
    )


def track(session: Session, version: str) -> bool:
    """Start (or keep) building ``version``; False when it is unknown or retired."""
    return bool(
        rowcount(
            session.execute(
                text(
                    "UPDATE model_versions SET tracked_at = coalesce(tracked_at, now())"
                    " WHERE version = :v AND retired_at IS NULL"
                ),
                {"v": version},
            )
        )
    )


def _catalogue_scan(session: Session, statement: str, params: dict[str, Any]) -> Result[Any]:
    """Run a statement that anti-joins the catalogue with a version's vectors, nested loops off.

    While a version builds, its vectors arrive faster than autovacuum's statistics follow: the
    planner, believing v has a handful of rows, joins every ready item against a materialised
    scan of all of v's (N x N/2 comparisons: seconds at 5k items, minutes at 100k). A merge or
    hash anti join reads each side once whatever the statistics say. Only this statement: the
    setting goes back to the session's own before the caller's next one.
    """
    session.execute(text("SET LOCAL enable_nestloop = off"))
    result = session.execute(text(statement), params)
    session.execute(text("SET LOCAL enable_nestloop TO DEFAULT"))
    return result


def switch_serving(session: Session, version: str) -> bool:
    """Point ``model_serving`` at ``version`` in one statement, only if it is complete then."""
    result = _catalogue_scan(
        session,
        "INSERT INTO model_serving (id, version, switched_at)"
        f" SELECT 1, CAST(:v AS varchar), now() WHERE {_COMPLETE}"
        " ON CONFLICT (id) DO UPDATE SET version = excluded.version, switched_at = now()",
        {"v": version},
    )
    return bool(rowcount(result))


def is_complete(session: Session, version: str) -> bool:
    return bool(_catalogue_scan(session, f"SELECT {_COMPLETE}", {"v": version}).scalar())


def retire(session: Session, version: str) -> str:
    """Mark ``version`` retired: 'retired', 'serving' (refused), 'unknown' or 'already'.

    Locks the serving row first, so a concurrent switch to ``version`` either lands before
    (and this refuses) or sees it retired (and refuses)."""
    serving = session.execute(
        text("SELECT version FROM model_serving WHERE id = 1 FOR UPDATE")
    ).scalar()
    if serving == version:
        return "serving"
    row = session.execute(
        text("SELECT retired_at FROM model_versions WHERE version = :v FOR UPDATE"),
        {"v": version},
    ).first()
    if row is None:
        return "unknown"
    if row.retired_at is not None:
        return "already"
    session.execute(
        text("UPDATE model_versions SET retired_at = now(), tracked_at = NULL WHERE version = :v"),
        {"v": version},
    )
    return "retired"


def is_retired(session: Session, version: str, *, lock: bool = False) -> bool:
    """True when retired or unknown; ``lock`` holds the row (FOR SHARE) until the commit, so
    a retire cannot slip between this check and the writes it guards."""
    suffix = " FOR SHARE" if lock else ""
    row = session.execute(
        text(f"SELECT retired_at FROM model_versions WHERE version = :v{suffix}"),  # noqa: S608
        {"v": version},
    ).first()
    return row is None or row.retired_at is not None


def mark_purged(session: Session, version: str) -> None:
    session.execute(
        text(
            "UPDATE model_versions SET purged_at = now()"
            " WHERE version = :v AND retired_at IS NOT NULL"
        ),
        {"v": version},
    )


def lacking_versions(session: Session) -> list[str]:
    """Versions being built (tracked, not serving, not retired) that some ready item has no
    vectors of: what a catch-up pass is for (a change not yet folded is the folds' part)."""
    building = _catalogue_scan(
        session,
        "SELECT v.version FROM model_versions v"
        " WHERE v.retired_at IS NULL AND v.tracked_at IS NOT NULL"
        " AND v.version NOT IN (SELECT version FROM model_serving)"
        " AND EXISTS (SELECT 1 FROM items i WHERE i.status = 'ready'"
        "   AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.item_id = i.id"
        "     AND e.model_version = v.version AND e.kind = 'full'))"
        " ORDER BY v.version",
        {},
    )
    return list(building.scalars())


def catalogue_size(session: Session) -> int:
    ready = session.execute(text("SELECT count(*) FROM items WHERE status = 'ready'"))
    return int(ready.scalar_one())


def rows(session: Session) -> list[VersionRow]:
    """Every registered version with its counts, oldest first (three aggregate statements)."""
    serving = serving_version(session)
    items: dict[str, int] = dict(
        session.execute(
            text(
                "SELECT e.model_version, count(*) FROM embeddings e"
                " JOIN items i ON i.id = e.item_id"
                " WHERE e.kind = 'full' AND i.status = 'ready' GROUP BY e.model_version"
            )
        ).all()
    )
    pending: dict[str, int] = dict(
        session.execute(
            text(
                "SELECT model_version, count(*) FROM list_changes"
                " WHERE fold_id IS NULL GROUP BY model_version"
            )
        ).all()
    )
    registered = session.execute(
        text("SELECT * FROM model_versions ORDER BY created_at, version")
    ).all()
    return [
        VersionRow(
            version=r.version,
            serving=r.version == serving,
            tracked=r.tracked_at is not None or r.version == serving,
            retired=r.retired_at is not None,
            purged=r.purged_at is not None,
            items=int(items.get(r.version, 0)),
            pending_changes=int(pending.get(r.version, 0)),
            bundle_path=r.bundle_path,
            mode=r.mode,
            provenance=dict(r.provenance or {}),
            settings=dict(r.settings or {}),
            created_at=r.created_at,
            retired_at=r.retired_at,
        )
        for r in registered
    ]
