"""responses and their input and output items

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("store", sa.Boolean(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Integer(), nullable=True),
        sa.Column("ended_at", sa.Integer(), nullable=True),
        sa.Column("completed_at", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("incomplete_details", JSONType, nullable=True),
        sa.Column("usage", JSONType, nullable=True),
    )
    op.create_index("ix_responses_tenant_created", "responses", ["tenant", "created_at"])
    op.create_index("ix_responses_status_created", "responses", ["status", "created_at"])
    op.create_table(
        "response_items",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "response_id",
            sa.String(64),
            sa.ForeignKey("responses.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.UniqueConstraint("response_id", "kind", "position", name="uq_response_items_position"),
    )
    op.create_index("ix_response_items_item_id", "response_items", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_response_items_item_id", table_name="response_items")
    op.drop_table("response_items")
    op.drop_index("ix_responses_status_created", table_name="responses")
    op.drop_index("ix_responses_tenant_created", table_name="responses")
    op.drop_table("responses")
