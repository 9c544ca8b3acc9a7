"""job item deliveries: ``job_items.attempts`` is renamed ``deliveries``, the one name the code
uses for deliveries of a photo to the models (workers/ingestion/deliveries.py)

Workers of an older release read the old name: run this with them stopped (the compose
``migrate`` service runs before web and worker start).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("job_items", "attempts", new_column_name="deliveries")


def downgrade() -> None:
    op.alter_column("job_items", "deliveries", new_column_name="attempts")
