"""conversation state: previous_response_id links, truncation records, conversations and
their items

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("previous_response_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("truncation_details", sa.JSON(none_as_null=True), nullable=True))
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(none_as_null=True), nullable=False),
    )
    op.create_table(
        "conversation_items",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("response_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_conversation_items_conversation", "conversation_items", ["conversation_id", "pk"]
    )
    op.create_index(
        "ix_conversation_items_item", "conversation_items", ["conversation_id", "item_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_conversation_items_item", table_name="conversation_items")
    op.drop_index("ix_conversation_items_conversation", table_name="conversation_items")
    op.drop_table("conversation_items")
    op.drop_table("conversations")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("truncation_details")
        batch.drop_column("previous_response_id")
