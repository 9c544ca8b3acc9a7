"""What an ingestion batch does for the other model versions (called from
workers.ingestion.batch, so that module keeps one job: its own version's outcome).

- Inside the batch's transaction: its version is known, and serves if none does yet (the
  first version that embeds an item on an empty system).
- Per item it embedded: the vectors it replaces. Its own version's kinds the photo no longer
  has always go. Other versions' vectors go only when they no longer describe the item (its
  photo changed, or it was not ready) or their version is not tracked; a tracked version's
  vectors of an unchanged photo stay, which is what lets it serve and be rolled back to.
- After the commit: its own version's fold, and a catch-up of every other tracked version (it
  embeds what the batch made ready, from the stored photos).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import text

from shared.search.scheduling import request_fold
from shared.versions.registry import claim_serving_if_none, ensure_known
from shared.versions.routing import keep_in_step

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.config import Settings

_TRACKED = (
    "SELECT version FROM model_versions WHERE retired_at IS NULL"
    " AND (tracked_at IS NOT NULL OR version IN (SELECT version FROM model_serving))"
)


def on_batch_commit(session: Session, model_version: str, *, embedded: bool) -> None:
    """In the batch's transaction, after its outcomes."""
    if embedded:
        claim_serving_if_none(session, model_version)
    else:
        ensure_known(session, model_version)


def drop_replaced_vectors(
    session: Session,
    item_id: int,
    model_version: str,
    kinds: Sequence[str],
    *,
    photo_changed: bool,
) -> None:
    session.execute(
        text(
            "DELETE FROM embeddings WHERE item_id = :id AND ("  # noqa: S608 - constants only
            " (model_version = :mv AND NOT kind = ANY(:kinds))"
            f" OR (model_version <> :mv AND (:changed OR model_version NOT IN ({_TRACKED}))))"
        ),
        {"id": item_id, "mv": model_version, "kinds": list(kinds), "changed": photo_changed},
    )


def after_batch(settings: Settings, session: Session, model_version: str, *, reason: str) -> None:
    """After the commit: this version's fold, then every other tracked version catches up."""
    request_fold(settings, reason=reason, model_version=model_version)
    keep_in_step(settings, session, besides=model_version, reason=reason)
