"""index responses.ended_at (the reaper looks at recently ended jobs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_responses_ended_at", "responses", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_ended_at", table_name="responses")
