"""Tampering with the audit trail in SQL, behind the engine's back, is caught by verify.

Each test edits, deletes, inserts or reorders rows directly, then expects ``verify`` to fail and
name the first sequence number that no longer checks out. A consistent rewrite (every later hash
recomputed, the head moved) is invisible to the chain alone: checkpoints and an exported head
are what catch it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, text, update

from engine import Engine
from engine import audit as engine_audit
from engine.audit import GENESIS, Anchor, ChainBroken, checkpoint, checkpoint_if_due, compute_hash, verify
from engine.models import AuditCheckpoint, AuditEvent, AuditHead, utcnow
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


def tamper(engine: Engine, sql: str, **params: object) -> None:
    with engine.db.engine.begin() as conn:
        conn.execute(text(sql), params)


def verdict(engine: Engine, **kwargs: object) -> engine_audit.Verdict:
    with engine.db.read() as s:
        return verify(s, **kwargs)  # type: ignore[arg-type]


def head_of(engine: Engine) -> Anchor:
    with engine.db.read() as s:
        return engine_audit.head(s)


def rewrite_from(engine: Engine, seq: int, change: Callable[[AuditEvent], None]) -> None:
    """What an attacker who knows the algorithm does: change one event, re-hash everything after it."""
    with engine.db.write() as s:
        rows = list(
            s.execute(select(AuditEvent).where(AuditEvent.seq >= seq).order_by(AuditEvent.seq)).scalars()
        )
        prev = s.execute(select(AuditEvent.hash).where(AuditEvent.seq == seq - 1)).scalar() or GENESIS
        change(rows[0])
        for row in rows:
            row.prev_hash = prev
            row.hash = prev = compute_hash(row)
        s.execute(update(AuditHead).values(seq=rows[-1].seq, hash=prev))


def test_an_intact_chain_verifies_and_reports_its_head(history: Engine) -> None:
    result = verdict(history)
    top = head_of(history)
    assert result.ok and result.checked == top.seq and result.head_seq == top.seq
    assert result.head_hash == top.hash and "intact" in str(result)


def test_an_edited_payload_is_caught(history: Engine) -> None:
    tamper(history, "UPDATE audit_event SET actor = 'someone_else' WHERE seq = 5")
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 5 and "hash" in result.reason and result.kind == "hash"
    assert "BROKEN at seq 5" in str(result)


def test_an_edited_time_is_caught(history: Engine) -> None:
    later = utcnow() + timedelta(days=30)
    with history.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 7).values(at=later))
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 7 and result.kind == "hash"


def test_a_deleted_event_is_caught(history: Engine) -> None:
    tamper(history, "DELETE FROM audit_event WHERE seq = 4")
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 4 and "missing" in result.reason


def test_a_deleted_tail_is_caught(history: Engine) -> None:
    top = head_of(history)
    tamper(history, "DELETE FROM audit_event WHERE seq = (SELECT MAX(seq) FROM audit_event)")
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == top.seq and result.kind == "missing"


def test_an_event_inserted_past_the_head_is_caught(history: Engine) -> None:
    top = head_of(history)
    tamper(
        history,
        "INSERT INTO audit_event (seq, at, actor, action, payload, prev_hash, hash) "
        "SELECT seq + 1000, at, actor, action, payload, hash, 'forged' FROM audit_event "
        "WHERE seq = (SELECT MAX(seq) FROM audit_event)",
    )
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == top.seq + 1000 and result.kind == "beyond"


def test_a_well_forged_event_appended_without_moving_the_head_is_caught(history: Engine) -> None:
    top = head_of(history)
    with history.db.write() as s:
        last = s.get(AuditEvent, top.seq)
        forged = AuditEvent(
            seq=top.seq + 1,
            at=last.at,
            actor="office",
            action="task.completed",
            payload={"forged": True},
            prev_hash=last.hash,
        )
        forged.hash = compute_hash(forged)
        s.add(forged)
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == top.seq + 1 and result.kind == "beyond"


def test_an_event_inserted_in_the_middle_is_caught(history: Engine) -> None:
    """Shift events 4.. up by one and slip a correctly hashed event in at 4: event 5 no longer links."""
    with history.db.write() as s:
        third = s.get(AuditEvent, 3)
        at, prev = third.at, third.hash
        s.execute(update(AuditEvent).where(AuditEvent.seq >= 4).values(seq=AuditEvent.seq + 100000))
        s.execute(update(AuditEvent).where(AuditEvent.seq >= 100004).values(seq=AuditEvent.seq - 99999))
        forged = AuditEvent(
            seq=4,
            at=at,
            actor="office",
            action="task.completed",
            payload={"data": {"score": 100}},
            prev_hash=prev,
        )
        forged.hash = compute_hash(forged)
        s.add(forged)
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 5 and result.kind == "link"


def test_a_naively_inserted_event_is_caught_where_it_is(history: Engine) -> None:
    with history.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq >= 4).values(seq=AuditEvent.seq + 100000))
        s.execute(update(AuditEvent).where(AuditEvent.seq >= 100004).values(seq=AuditEvent.seq - 99999))
        s.add(
            AuditEvent(
                seq=4,
                at=utcnow(),
                actor="x",
                action="task.completed",
                payload={},
                prev_hash="0" * 64,
                hash="f" * 64,
            )
        )
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 4 and result.kind == "link"


def test_two_events_swapped_are_caught(history: Engine) -> None:
    """Reordering: exchange the content of events 3 and 4 (each keeps its seq)."""
    with history.db.write() as s:
        a, b = s.get(AuditEvent, 3), s.get(AuditEvent, 4)
        fields = ("actor", "action", "payload", "instance_id", "task_guid", "definition_id", "org_id")
        values = {f: (getattr(a, f), getattr(b, f)) for f in fields}
        for f, (va, vb) in values.items():
            setattr(a, f, vb)
            setattr(b, f, va)
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 3 and result.kind == "hash"


def test_a_rehashed_edit_still_breaks_the_next_link(history: Engine) -> None:
    """Recomputing the edited event's own hash is not enough: the next event points at the old one."""
    with history.db.write() as s:
        event = s.get(AuditEvent, 3)
        event.payload = {**event.payload, "data": {"forged": True}}
        event.hash = compute_hash(event)
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == 4 and result.kind == "link"


def test_a_forged_head_is_caught(history: Engine) -> None:
    top = head_of(history)
    with history.db.write() as s:
        s.execute(update(AuditHead).values(hash="f" * 64))
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == top.seq and result.kind == "head"


def test_a_head_moved_back_over_a_deleted_tail_needs_an_exported_head(history: Engine) -> None:
    """Delete the last event and rewind the head to match: the chain alone is consistent again."""
    exported = head_of(history)
    with history.db.write() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == exported.seq))
        prev = s.get(AuditEvent, exported.seq - 1)
        s.execute(update(AuditHead).values(seq=prev.seq, hash=prev.hash))
    assert verdict(history).ok
    result = verdict(history, against=exported)
    assert not result.ok and result.first_bad_seq == exported.seq and result.kind == "against"


def test_a_consistent_rewrite_is_caught_by_the_checkpoint_kept_in_the_database(history: Engine) -> None:
    with history.db.write() as s:
        mark = checkpoint(s, "auditor")
    history.start("approval", "sec1", "B1")  # history goes on after the checkpoint
    rewrite_from(history, 6, lambda e: setattr(e, "actor", "mallory"))
    result = verdict(history)
    assert not result.ok and result.first_bad_seq == mark.seq and result.kind == "checkpoint"


def test_a_consistent_rewrite_and_deleted_checkpoints_are_caught_by_the_exported_head(
    history: Engine,
) -> None:
    with history.db.write() as s:
        mark = checkpoint(s, "auditor")
    exported = Anchor(mark.seq, mark.hash)
    history.start("approval", "sec1", "B1")
    rewrite_from(history, 2, lambda e: setattr(e, "payload", {**e.payload, "org": "B2"}))
    with history.db.write() as s:
        s.execute(delete(AuditCheckpoint))
    assert verdict(history).ok  # the rewrite is self-consistent...
    result = verdict(history, against=exported)  # ...but not with what the auditor kept
    assert not result.ok and result.first_bad_seq == exported.seq and result.kind == "against"
    assert verdict(history, against=Anchor(exported.seq, exported.hash)).first_bad_seq == exported.seq


def test_an_untouched_history_matches_its_exported_head(history: Engine) -> None:
    with history.db.write() as s:
        mark = checkpoint(s, "auditor")
    history.start("approval", "sec1", "B1")
    result = verdict(history, against=Anchor(mark.seq, mark.hash))
    assert result.ok and f"history up to seq {mark.seq} matches" in str(result)
    too_far = verdict(history, against=Anchor(head_of(history).seq + 5, "a" * 64))
    assert not too_far.ok and too_far.kind == "against"


def test_verify_since_a_checkpoint_walks_only_what_follows_it(history: Engine) -> None:
    with history.db.write() as s:
        mark = checkpoint(s)
    history.start("approval", "sec1", "B1")
    result = verdict(history, since=Anchor(mark.seq, mark.hash))
    assert result.ok and result.checked == head_of(history).seq - mark.seq
    tamper(history, "UPDATE audit_event SET actor = 'x' WHERE seq = :seq", seq=mark.seq)
    broken = verdict(history, since=Anchor(mark.seq, mark.hash))
    assert not broken.ok and broken.first_bad_seq == mark.seq and broken.kind == "anchor"


def test_checkpoints_record_the_verified_head_and_are_audited(history: Engine) -> None:
    top = head_of(history)
    with history.db.write() as s:
        mark = checkpoint(s, "auditor")
    assert (mark.seq, mark.hash, mark.created_by) == (top.seq, top.hash, "auditor")
    with history.db.read() as s:
        last = s.get(AuditEvent, top.seq + 1)
    assert last.action == "audit_checkpointed" and last.payload == {"seq": top.seq, "hash": top.hash}
    assert verdict(history).ok


def test_checkpoint_refuses_a_broken_chain_and_records_nothing(history: Engine) -> None:
    tamper(history, "UPDATE audit_event SET actor = 'x' WHERE seq = 2")
    with pytest.raises(ChainBroken) as err, history.db.write() as s:
        checkpoint(s)
    assert err.value.verdict.first_bad_seq == 2
    with history.db.read() as s:
        assert s.execute(select(AuditCheckpoint)).first() is None


def test_checkpoint_if_due_checkpoints_once_per_period(history: Engine) -> None:
    now = utcnow()
    with history.db.write() as s:
        first = checkpoint_if_due(s, timedelta(days=1), now=now)
    assert first is not None
    with history.db.write() as s:
        assert checkpoint_if_due(s, timedelta(days=1), now=now + timedelta(hours=23)) is None
    with history.db.write() as s:
        second = checkpoint_if_due(s, timedelta(days=1), now=now + timedelta(days=1, minutes=1))
    assert second is not None and second.seq > first.seq
    assert verdict(history).ok


def test_checkpoint_if_due_on_an_empty_trail_does_nothing(engine: Engine) -> None:
    with engine.db.write() as s:
        s.execute(delete(AuditEvent))
        s.execute(update(AuditHead).values(seq=0, hash=GENESIS))
    with engine.db.write() as s:
        assert checkpoint_if_due(s) is None


def test_appends_committed_while_verify_walks_are_not_tampering(
    history: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify reads the head first and stops there: a writer committing meanwhile is not a break."""
    real = engine_audit.iter_pages

    def pages_with_a_writer(*args, **kwargs):  # type: ignore[no-untyped-def]
        for i, rows in enumerate(real(*args, **kwargs)):
            yield rows
            if i == 0:
                history.start("approval", "sec1", "B1")

    monkeypatch.setattr(engine_audit, "iter_pages", pages_with_a_writer)
    before = head_of(history)
    result = verdict(history, batch=3)
    assert result.ok and result.head_seq == before.seq
    monkeypatch.undo()
    assert verdict(history).head_seq > before.seq


def test_verify_is_independent_of_the_database_session_time_zone(history: Engine) -> None:
    """A PostgreSQL server set to Asia/Shanghai hands times back in +08:00; the hashes still match."""
    if not history.db.postgres:
        pytest.skip("SQLite has no session time zone")
    with history.db.read() as s:
        s.execute(text("SET TIME ZONE 'Asia/Shanghai'"))
        assert verify(s).ok


@pytest.mark.parametrize(
    ("text_", "expected"),
    [
        ('{"seq": 12, "hash": "' + "a" * 64 + '"}', Anchor(12, "a" * 64)),
        ("12:" + "b" * 64, Anchor(12, "b" * 64)),
        ('  {"seq": "7", "hash": "' + "c" * 64 + '", "at": "2025-01-01"}  ', Anchor(7, "c" * 64)),
    ],
)
def test_an_exported_head_parses(text_: str, expected: Anchor) -> None:
    assert Anchor.parse(text_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "{",
        "[1, 2]",
        '{"seq": 1}',
        "x:" + "a" * 64,
        "0:" + "a" * 64,
        "5:abc",
        "5:" + "A" * 64,
        '{"seq": true, "hash": "' + "a" * 64 + '"}',
    ],
)
def test_a_malformed_head_is_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        Anchor.parse(bad)
