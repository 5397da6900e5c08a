"""Tampering with the audit trail in SQL, behind the engine's back, is caught by verify."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from engine import Engine
from engine.audit import verify
from tests.helpers import files, only_task


@pytest.fixture
def history(engine: Engine) -> Engine:
    engine.deploy(files("approval.bpmn", "apply.json", "review.json"), "designer")
    engine.start("approval", "sec1", "B1")
    engine.complete(only_task(engine, "sec1").id, "sec1", {"title": "审计测试", "problems": ["问题"]})
    engine.complete(only_task(engine, "office").id, "office", {"verdict": "reject", "comment": "不予立项"})
    with engine.db.read() as s:
        assert verify(s).ok
    return engine


def tamper(engine: Engine, sql: str) -> None:
    with engine.db.engine.begin() as conn:
        conn.execute(text(sql))


def verdict(engine: Engine):  # type: ignore[no-untyped-def]
    with engine.db.read() as s:
        return verify(s)


def test_an_edited_payload_is_caught(history: Engine) -> None:
    tamper(history, "UPDATE audit_event SET actor = 'someone_else' WHERE seq = 5")
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 5 and "hash" in result.reason


def test_a_deleted_event_is_caught(history: Engine) -> None:
    tamper(history, "DELETE FROM audit_event WHERE seq = 4")
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 4 and "missing" in result.reason


def test_a_deleted_tail_is_caught(history: Engine) -> None:
    tamper(history, "DELETE FROM audit_event WHERE seq = (SELECT MAX(seq) FROM audit_event)")
    assert not verdict(history).ok


def test_an_inserted_event_is_caught(history: Engine) -> None:
    tamper(
        history,
        "INSERT INTO audit_event (seq, at, actor, action, payload, prev_hash, hash) "
        "SELECT seq + 1000, at, actor, action, payload, hash, 'forged' FROM audit_event "
        "WHERE seq = (SELECT MAX(seq) FROM audit_event)",
    )
    result = verdict(history)
    assert not result.ok


def test_a_rehashed_edit_still_breaks_the_next_link(history: Engine) -> None:
    """Recomputing the edited event's own hash is not enough: the next event points at the old one."""
    from engine.audit import compute_hash
    from engine.models import AuditEvent

    with history.db.write() as s:
        event = s.get(AuditEvent, 3)
        event.payload = {**event.payload, "data": {"forged": True}}
        event.hash = compute_hash(event)
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 4
