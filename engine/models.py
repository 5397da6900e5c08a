"""Tables of the engine, as SQLAlchemy 2.0 typed mappings.

The schema itself is owned by Alembic (``engine/migrations``); these classes must match it, and
``tests/test_migrations.py`` checks that they do.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend: SQLite forgets the zone, so it is put back here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# Big integers on PostgreSQL, plain INTEGER on SQLite so that it stays the rowid alias.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON()}


# --- directory -----------------------------------------------------------------------------------


class Organisation(Base):
    """A node of the party-organisation tree (公司党委 → 党总支 → 党支部 → 党小组)."""

    __tablename__ = "organisation"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), default="branch")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"), index=True)

    parent: Mapped[Organisation | None] = relationship(remote_side=[id])


class User(Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Sign-in lock-out: consecutive failures since the last success, and until when it is locked.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    locale: Mapped[str | None] = mapped_column(String(8))  # zh_CN|en, remembered across sessions


class Membership(Base):
    """A role held in an organisation: roles are never global, always "in" somewhere."""

    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_id", "org_id", "role"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    role: Mapped[str] = mapped_column(String(64))


class GroupMember(Base):
    """Plain named groups, for lanes whose name is not one of the known roles."""

    __tablename__ = "group_member"
    __table_args__ = (UniqueConstraint("user_id", "group_name"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    group_name: Mapped[str] = mapped_column(String(64), index=True)


# --- definitions and instances -------------------------------------------------------------------


class Definition(Base):
    """An immutable deployed bundle: BPMN, DMN and forms, versioned by content hash."""

    __tablename__ = "definition"
    __table_args__ = (
        UniqueConstraint("process_key", "version"),
        UniqueConstraint("process_key", "content_hash"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    process_key: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    sources: Mapped[dict] = mapped_column(JSON, deferred=True)  # {filename: text}; read on a cache miss only
    deployed_by: Mapped[str] = mapped_column(String(64))
    deployed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    __tablename__ = "instance"
    __table_args__ = (
        Index("ix_instance_org_status", "org_id", "status"),
        # one instance per business key and process: what makes bulk starts idempotent under races
        UniqueConstraint("process_key", "business_key", name="uq_instance_business_key"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("definition.id"), index=True)
    process_key: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|completed|failed|terminated
    business_key: Mapped[str | None] = mapped_column(String(200), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    stage: Mapped[str | None] = mapped_column(String(64), index=True)
    title: Mapped[str | None] = mapped_column(String(300))
    started_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[bytes] = mapped_column(LargeBinary)  # serialized workflow, spec not repeated
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # summary for lists and read models
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()

    __mapper_args__ = {"version_id_col": revision}


class InstanceFact(Base):
    """What one instance adds to a yearly figure (engine.facts): one row per non-zero measure.

    Kept by the unit of work in the instance's own transaction, so figures never decode instance
    data; the drill-downs read these rows, the dashboards their sums in ``figure_count``.
    """

    __tablename__ = "instance_fact"
    __table_args__ = (Index("ix_instance_fact_cell", "process_key", "year", "org_id", "measure"),)

    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), primary_key=True)
    measure: Mapped[str] = mapped_column(String(64), primary_key=True)
    process_key: Mapped[str] = mapped_column(String(128))
    year: Mapped[int] = mapped_column(Integer)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    value: Mapped[int] = mapped_column(Integer)


class FigureCount(Base):
    """The sum of ``instance_fact`` per organisation, year and measure, kept by the same units of work.

    A province's pledge figure is 100,000 cycles; reading 36,000 sums instead of 480,000 facts is
    what keeps it well under the dashboards' 200 ms. Units of work add their deltas in key order,
    so concurrent ones queue on a row instead of deadlocking.
    """

    __tablename__ = "figure_count"

    process_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), primary_key=True)
    measure: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class HumanTask(Base):
    """The inbox projection: everything the inbox needs, so it never deserializes a workflow.

    ``candidate_key`` says who may claim an unassigned task, in one indexed column:
    ``org:<id>:<role>`` for a role held in an organisation, ``group:<name>`` for a plain group.
    """

    __tablename__ = "human_task"
    __table_args__ = (
        UniqueConstraint("instance_id", "task_guid"),
        # Each inbox query is one equality lookup read in id order straight off one of these
        # (engine.queries.inbox). assignee_id in the candidate index also makes it out-rank the
        # assignee index for "unclaimed in my role" on SQLite.
        Index("ix_human_task_candidate", "candidate_key", "state", "assignee_id", "id"),
        Index("ix_human_task_assignee", "assignee_id", "state", "id"),
        Index("ix_human_task_instance_state", "instance_id", "state"),
        # The dashboards' overdue figure and its drill-down: open tasks only, by organisation and due date.
        Index(
            "ix_human_task_open_due",
            "org_id",
            "due_at",
            "process_key",
            postgresql_where=sql_text("state = 'open'"),
            sqlite_where=sql_text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"))
    task_guid: Mapped[str] = mapped_column(String(36))
    task_spec: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    form: Mapped[str | None] = mapped_column(String(200))
    lane: Mapped[str | None] = mapped_column(String(64))
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    process_key: Mapped[str] = mapped_column(String(128))
    stage: Mapped[str | None] = mapped_column(String(64))
    candidate_key: Mapped[str | None] = mapped_column(String(120))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    assignment: Mapped[str | None] = mapped_column(String(16))  # owner|initiator|claim
    priority: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="open")  # open|completed|cancelled
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    completed_at: Mapped[datetime | None] = mapped_column()
    # Set once when the overdue task has been escalated to the lane's supervisor role.
    escalated_at: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """Due work: a waiting timer today, reminders and other background work tomorrow."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="timer")
    task_guid: Mapped[str | None] = mapped_column(String(36))
    due_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|failed|cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageWait(Base):
    """An instance waiting for a message, so delivery never scans every instance."""

    __tablename__ = "message_wait"
    __table_args__ = (UniqueConstraint("instance_id", "name"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"))
    name: Mapped[str] = mapped_column(String(200), index=True)


class Incident(Base):
    """Something that needs a person: a failed script, a job out of attempts. Never silently dropped."""

    __tablename__ = "incident"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instance.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id"))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open|resolved
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """Append-only, hash-chained. No foreign keys: events outlive whatever they describe."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_instance", "instance_id", "seq"),
        Index("ix_audit_actor", "actor", "seq"),
        # The audit room's organisation and process filters walk these in seq order.
        Index("ix_audit_org", "org_id", "seq"),
        Index("ix_audit_definition", "definition_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    instance_id: Mapped[int | None] = mapped_column(BigInteger)
    task_guid: Mapped[str | None] = mapped_column(String(36))
    definition_id: Mapped[int | None] = mapped_column(BigInteger)
    org_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """One row: the chain's head. Locking it serializes appends, so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A published chain head: whoever holds (seq, hash) can later prove history up to it unchanged."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


# --- around the processes ------------------------------------------------------------------------


class BoardFeedback(Base):
    """Supervision feedback (群众监督) left by the masses on a public post sign.

    The sender's address is kept only as a keyed hash: enough to rate-limit, not to identify.
    """

    __tablename__ = "board_feedback"
    __table_args__ = (
        Index("ix_board_feedback_instance", "instance_id", "id"),
        Index("ix_board_feedback_address", "address_hash", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"))
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    author: Mapped[str | None] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    address_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    hidden: Mapped[bool] = mapped_column(default=False)
    hidden_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    hidden_at: Mapped[datetime | None] = mapped_column()
    hidden_reason: Mapped[str | None] = mapped_column(String(200))


class Attachment(Base):
    """An uploaded file (evidence, minutes): bytes on disk under the attachments directory, facts here."""

    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("human_task.id"))
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """An in-app notice (reminder, escalation). ``dedupe_key`` makes each one go out once only."""

    __tablename__ = "notification"
    __table_args__ = (
        UniqueConstraint("user_id", "dedupe_key"),
        Index("ix_notification_user_unread", "user_id", "read_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    kind: Mapped[str] = mapped_column(String(32))  # reminder|overdue|escalation|incident
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str | None] = mapped_column(Text)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instance.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("human_task.id"))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column()


class ApiToken(Base):
    """A bearer token for the REST API. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
