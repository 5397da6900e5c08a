"""Small helpers shared by the engine tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine import Engine
from engine.audit import verify
from engine.directory import user_by_name
from engine.models import AuditEvent, HumanTask
from engine.queries import inbox
from tests.conftest import FIXTURES


def files(*names: str) -> dict[str, bytes]:
    return {name: (FIXTURES / name).read_bytes() for name in names}


def inbox_of(engine: Engine, username: str) -> list[HumanTask]:
    with engine.db.read() as s:
        return inbox(s, user_by_name(s, username).id)


def only_task(engine: Engine, username: str, spec: str | None = None) -> HumanTask:
    tasks = [t for t in inbox_of(engine, username) if spec is None or t.task_spec == spec]
    assert len(tasks) == 1, f"{username} has {[t.task_spec for t in tasks]}"
    return tasks[0]


def actions(engine: Engine, instance_id: int | None = None) -> list[str]:
    with engine.db.read() as s:
        query = s.query(AuditEvent).order_by(AuditEvent.seq)
        if instance_id is not None:
            query = query.filter(AuditEvent.instance_id == instance_id)
        return [e.action for e in query]


def assert_chain_intact(engine: Engine) -> None:
    with engine.db.read() as s:
        verdict = verify(s)
    assert verdict.ok, str(verdict)


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)
