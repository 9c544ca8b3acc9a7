"""recovery counters: deliveries per job item, sweeper re-enqueues per job; media lookups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "job_items", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("jobs", sa.Column("requeues", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_jobs_active_updated_at",
        "jobs",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_index(op.f("ix_items_media_key"), "items", ["media_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_items_media_key"), table_name="items")
    op.drop_index(
        "ix_jobs_active_updated_at",
        table_name="jobs",
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.drop_column("jobs", "requeues")
    op.drop_column("job_items", "attempts")
