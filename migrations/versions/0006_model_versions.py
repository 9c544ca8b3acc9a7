"""model versions: the registry of versions the workers run, and the one-row serving pointer

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("bundle_path", sa.Text(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column(
            "provenance",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "settings", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("tracked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_table(
        "model_serving",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column(
            "switched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_model_serving_singleton")),
        sa.ForeignKeyConstraint(
            ["version"],
            ["model_versions.version"],
            name=op.f("fk_model_serving_version_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_serving")),
    )
    # A catalogue embedded before versions were known: each of its versions is registered, and
    # the newest vector's (the one product pages answered with) serves and is kept in step.
    op.execute(
        "INSERT INTO model_versions (version, tracked_at)"
        " SELECT DISTINCT model_version, NULL::timestamptz FROM embeddings"
    )
    op.execute(
        "INSERT INTO model_serving (id, version)"
        " SELECT 1, model_version FROM embeddings ORDER BY id DESC LIMIT 1"
    )
    op.execute(
        "UPDATE model_versions SET tracked_at = now()"
        " WHERE version IN (SELECT version FROM model_serving)"
    )


def downgrade() -> None:
    op.drop_table("model_serving")
    op.drop_table("model_versions")
