"""embedding crops: each top/bottom vector names the small JPEG of the garment it was cut from

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("embeddings", sa.Column("crop_key", sa.String(length=255), nullable=True))
    # Media retention asks which stored files a row still references, crops as well as photos.
    op.create_index(op.f("ix_embeddings_crop_key"), "embeddings", ["crop_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_embeddings_crop_key"), table_name="embeddings")
    op.drop_column("embeddings", "crop_key")
