"""Composite indexes for the queue and quota counts (status+seq: FIFO position; owner+status: per-token quota).

Revision ID: 0003_sweep_queue_indexes
Revises: 0002_schedules
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003_sweep_queue_indexes"
down_revision = "0002_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sweeps_status_seq", "sweeps", ["status", "seq"])
    op.create_index("ix_sweeps_owner_status", "sweeps", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_sweeps_owner_status", "sweeps")
    op.drop_index("ix_sweeps_status_seq", "sweeps")
