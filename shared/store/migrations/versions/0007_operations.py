"""what operators need: precise enqueue time and run timings, and indexes for the admin
listing (by model) and for a response's webhook events

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("timings", sa.JSON(none_as_null=True), nullable=True))
    op.create_index("ix_responses_model_created", "responses", ["model", "created_at"])
    op.create_index("ix_webhook_events_response", "webhook_events", ["response_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_response", table_name="webhook_events")
    op.drop_index("ix_responses_model_created", table_name="responses")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("timings")
        batch.drop_column("enqueued_at")
