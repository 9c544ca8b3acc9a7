"""neighbour lists, their change log and the triggers that fill it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Every insert, delete or vector rewrite of an embedding leaves a row in ``list_changes``
(statement-level triggers with transition tables: one INSERT ... SELECT per statement, so bulk
loads stay fast). The workers fold those rows into ``neighbour_lists``; readers add the changes
their copy has not seen yet. Embeddings that exist when this migration runs are logged too, so
the first fold computes every list.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LOG_INSERTS = """
CREATE FUNCTION visrec_log_embedding_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_changes (model_version, kind, item_id)
    SELECT model_version, kind, item_id FROM new_rows;
    RETURN NULL;
END $$;
"""

_LOG_DELETES = """
CREATE FUNCTION visrec_log_embedding_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_changes (model_version, kind, item_id)
    SELECT model_version, kind, item_id FROM old_rows;
    RETURN NULL;
END $$;
"""

# Only a new vector (or a row moved to another item, kind or version) changes any list; an
# update that rewrites boxes or scores with the same bytes logs nothing.
_LOG_UPDATES = """
CREATE FUNCTION visrec_log_embedding_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_changes (model_version, kind, item_id)
    SELECT o.model_version, o.kind, o.item_id
      FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE n.vector IS DISTINCT FROM o.vector
        OR (n.model_version, n.kind, n.item_id)
           IS DISTINCT FROM (o.model_version, o.kind, o.item_id)
    UNION ALL
    SELECT n.model_version, n.kind, n.item_id
      FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE (n.model_version, n.kind, n.item_id)
           IS DISTINCT FROM (o.model_version, o.kind, o.item_id);
    RETURN NULL;
END $$;
"""

_TRIGGERS = [
    "CREATE TRIGGER embeddings_log_inserts AFTER INSERT ON embeddings"
    " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
    " EXECUTE FUNCTION visrec_log_embedding_inserts()",
    "CREATE TRIGGER embeddings_log_deletes AFTER DELETE ON embeddings"
    " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
    " EXECUTE FUNCTION visrec_log_embedding_deletes()",
    "CREATE TRIGGER embeddings_log_updates AFTER UPDATE ON embeddings"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"
    " EXECUTE FUNCTION visrec_log_embedding_updates()",
]


def upgrade() -> None:
    op.create_table(
        "neighbour_lists",
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("neighbour_ids", sa.LargeBinary(), nullable=False),
        sa.Column("sq_distances", sa.LargeBinary(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("fold_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "octet_length(neighbour_ids) = octet_length(sq_distances)",
            name=op.f("ck_neighbour_lists_lengths"),
        ),
        sa.PrimaryKeyConstraint(
            "model_version", "kind", "item_id", name=op.f("pk_neighbour_lists")
        ),
    )
    op.create_table(
        "list_folds",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("changes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lists_written", sa.Integer(), server_default="0", nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_folds")),
    )
    op.create_table(
        "list_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("fold_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_changes")),
    )
    op.create_index("ix_list_changes_fold_id", "list_changes", ["fold_id"], unique=False)
    op.create_table(
        "list_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("purged_through", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_list_state_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_state")),
    )
    op.execute("INSERT INTO list_state (id, purged_through) VALUES (1, 0)")
    for function in (_LOG_INSERTS, _LOG_DELETES, _LOG_UPDATES):
        op.execute(function)
    for trigger in _TRIGGERS:
        op.execute(trigger)
    op.execute(
        "INSERT INTO list_changes (model_version, kind, item_id)"
        " SELECT model_version, kind, item_id FROM embeddings"
    )


def downgrade() -> None:
    for name in ("embeddings_log_inserts", "embeddings_log_deletes", "embeddings_log_updates"):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON embeddings")
    for name in ("inserts", "deletes", "updates"):
        op.execute(f"DROP FUNCTION IF EXISTS visrec_log_embedding_{name}()")
    op.drop_table("list_state")
    op.drop_index("ix_list_changes_fold_id", table_name="list_changes")
    op.drop_table("list_changes")
    op.drop_table("list_folds")
    op.drop_table("neighbour_lists")
