"""usage records: seconds of audio and characters of speech

Revision ID: 0005_usage_audio
Revises: 0003_usage
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_usage_audio"
down_revision = "0003_usage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default fills the rows already there; SQLite adds such columns in place.
    op.add_column(
        "usage_records", sa.Column("audio_s", sa.Float(), nullable=False, server_default="0")
    )
    op.add_column(
        "usage_records", sa.Column("characters", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("characters")
        batch.drop_column("audio_s")
