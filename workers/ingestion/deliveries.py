"""Deliveries: how often a job item's photo was handed to the models (``job_items.deliveries``).

A delivery is counted, and committed, before the models see the photo, so one that never ends
(the worker was killed by a segfault or the OOM killer) stays counted; a photo that keeps killing
workers is given up on after ``ITEM_MAX_DELIVERIES``. A delivery that ended in a transient error
(database or broker unreachable: the worker did not die) is returned by the retry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import text

from shared.ingest_state import lock_job
from shared.vocabulary import JobItemStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def count_deliveries(
    session: Session, job_id: uuid.UUID, job_item_ids: Sequence[int]
) -> dict[int, int]:
    """Count one delivery of each job item still pending: its deliveries now, by job item id."""
    lock_job(session, job_id)
    rows = session.execute(
        text(
            "UPDATE job_items SET deliveries = deliveries + 1, updated_at = now()"
            " WHERE job_id = :job AND id = ANY(:ids) AND status = :pending"
            " RETURNING id, deliveries"
        ),
        {"job": job_id, "ids": list(job_item_ids), "pending": JobItemStatus.PENDING},
    ).all()
    return dict(rows)


def return_deliveries(session: Session, job_id: uuid.UUID, job_item_ids: Sequence[int]) -> None:
    """Take back one delivery of each job item still pending (it ended in a transient error)."""
    lock_job(session, job_id)
    session.execute(
        text(
            "UPDATE job_items SET deliveries = deliveries - 1"
            " WHERE job_id = :job AND id = ANY(:ids) AND status = :pending AND deliveries > 0"
        ),
        {"job": job_id, "ids": list(job_item_ids), "pending": JobItemStatus.PENDING},
    )
