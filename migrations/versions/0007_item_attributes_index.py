"""item attributes index: GIN (jsonb_path_ops) over ``items.attributes``

A selective filter's equality conditions (``attr.<name>=<value>``) are answered by containment
(``attributes @> '{"<name>": <value>}'``) through this index instead of a scan of every item's
JSONB (workers/search/queries.py). jsonb_path_ops: smaller and faster than the default operator
class for ``@>``, the only operator used on it.

Built CONCURRENTLY (outside a transaction) so a live catalogue keeps taking writes meanwhile.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_items_attributes",
            "items",
            ["attributes"],
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_items_attributes",
            table_name="items",
            postgresql_concurrently=True,
        )
