"""jobs: which server runs each running job, and when it last said it lives

Revision ID: 0006_job_runner
Revises: 0004_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_job_runner"
down_revision = "0004_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows already there (and jobs never claimed) have no runner; a running
    # job without one is settled by the next server to start, as before.
    op.add_column("jobs", sa.Column("runner", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("runner_host", sa.String(length=255), nullable=True))
    op.add_column("jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("runner_host")
        batch.drop_column("runner")
