"""What the pages read from the database: ready items for the grid, one item, one job."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import Item, Job, JobItem

PAGE_SIZE = 24


@dataclass(frozen=True)
class CataloguePage:
    items: list[Item]
    page: int
    pages: int
    total: int


def catalogue_page(session: Session, page: int, page_size: int = PAGE_SIZE) -> CataloguePage:
    """Ready items only (pending and failed ones have nothing to show), in SKU order."""
    total = session.scalar(select(func.count()).select_from(Item).where(Item.status == "ready"))
    total = int(total or 0)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    items = session.scalars(
        select(Item)
        .where(Item.status == "ready")
        .order_by(Item.sku)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return CataloguePage(list(items), page, pages, total)


def item_by_sku(session: Session, sku: str) -> Item | None:
    return session.scalar(select(Item).where(Item.sku == sku))


@dataclass(frozen=True)
class JobView:
    id: str
    status: str
    total: int
    done: int
    failed: int
    error: str | None
    failures: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "partial", "failed")

    @property
    def percent(self) -> int:
        return int(100 * (self.done + self.failed) / self.total) if self.total else 0


def job_view(session: Session, job_id: str, max_failures: int = 20) -> JobView | None:
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return None
    job = session.get(Job, key)
    if job is None:
        return None
    failed_items = session.scalars(
        select(JobItem)
        .where(JobItem.job_id == key, JobItem.status == "failed")
        .order_by(JobItem.position)
        .limit(max_failures)
    ).all()
    failures = [{"sku": it.sku, "reason": it.reason, "error": it.error} for it in failed_items]
    return JobView(str(job.id), job.status, job.total, job.done, job.failed, job.error, failures)
