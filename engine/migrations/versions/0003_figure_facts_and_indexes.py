"""figure facts per instance and their sums; indexes for overdue tasks and the audit room's filters

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 03:45:00.000000

The new ``instance_fact`` and ``figure_count`` tables are filled here from the instances already
stored, with the rules the unit of work uses from now on (engine.facts), so upgraded installations
show the same figures as before.
"""

import sqlalchemy as sa
from alembic import op

from engine import facts

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    table = op.create_table(
        "instance_fact",
        sa.Column("instance_id", BigID, nullable=False),
        sa.Column("measure", sa.String(length=64), nullable=False),
        sa.Column("process_key", sa.String(length=128), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("org_id", BigID, nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instance.id"]),
        sa.ForeignKeyConstraint(["org_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("instance_id", "measure"),
    )
    op.create_index("ix_instance_fact_cell", "instance_fact", ["process_key", "year", "org_id", "measure"])
    counts = op.create_table(
        "figure_count",
        sa.Column("process_key", sa.String(length=128), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("org_id", BigID, nullable=False),
        sa.Column("measure", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("process_key", "year", "org_id", "measure"),
    )
    op.create_index(
        "ix_human_task_open_due",
        "human_task",
        ["org_id", "due_at", "process_key"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_audit_org", "audit_event", ["org_id", "seq"])
    op.create_index("ix_audit_definition", "audit_event", ["definition_id", "seq"])
    _backfill(table, counts)


def _backfill(table: sa.Table, counts: sa.Table) -> None:
    instance = sa.table(
        "instance",
        sa.column("id"),
        sa.column("process_key"),
        sa.column("data", sa.JSON),
        sa.column("status"),
        sa.column("org_id"),
    )
    facts.fill(op.get_bind(), table, instance)
    facts.sum_up(op.get_bind(), table, counts)


def downgrade() -> None:
    op.drop_index("ix_audit_definition", table_name="audit_event")
    op.drop_index("ix_audit_org", table_name="audit_event")
    op.drop_index("ix_human_task_open_due", table_name="human_task")
    op.drop_table("figure_count")
    op.drop_index("ix_instance_fact_cell", table_name="instance_fact")
    op.drop_table("instance_fact")
