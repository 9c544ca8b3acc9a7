"""neighbour lists by fold: an index on (model_version, kind, fold_id), so a worker whose lists
are a few folds behind reads only the lists those folds wrote (workers/search/fold.py
``load_lists``) instead of every list of the kind.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_neighbour_lists_fold",
        "neighbour_lists",
        ["model_version", "kind", "fold_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_neighbour_lists_fold", table_name="neighbour_lists")
