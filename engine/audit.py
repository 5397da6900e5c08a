"""The hash-chained audit trail: 执行必记录, and proof that no record was altered.

Each event's hash covers its canonical content and the previous event's hash. Appends lock the
single ``audit_head`` row, so concurrent writers queue for a moment at commit time and the chain
never forks; ``seq`` is unique and gap-free, so a deleted event shows as a gap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from engine.models import AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64
HEAD_ID = 1


@dataclass
class PendingEvent:
    """An event described by a unit of work, appended when the work commits."""

    actor: str
    action: str
    payload: dict[str, Any]
    instance_id: int | None = None
    task_guid: str | None = None
    definition_id: int | None = None
    org_id: int | None = None


def normalize(payload: Any) -> Any:
    """The JSON value that will be stored and read back, so the hash is stable across backends."""
    return json.loads(json.dumps(payload, ensure_ascii=False, default=str))


def canonical(event: AuditEvent) -> bytes:
    body = {
        "seq": event.seq,
        "at": event.at.isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "instance_id": event.instance_id,
        "task_guid": event.task_guid,
        "definition_id": event.definition_id,
        "org_id": event.org_id,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def _lock_head(session: Session) -> tuple[int, str]:
    head = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID).with_for_update()
    ).first()
    if head is None:  # the first migration creates it; tolerate a schema made by create_all
        session.execute(insert(AuditHead).values(id=HEAD_ID, seq=0, hash=GENESIS))
        return 0, GENESIS
    return head.seq, head.hash


def append(session: Session, events: list[PendingEvent], at: datetime | None = None) -> list[AuditEvent]:
    """Append events to the chain inside the caller's transaction. Call last, just before commit.

    Plain INSERT/UPDATE statements rather than ORM objects: this runs in every unit of work, and
    the append-only rows never need the session's change tracking (half of a completion's cost).
    """
    if not events:
        return []
    seq, prev = _lock_head(session)
    at = at or utcnow()
    rows: list[AuditEvent] = []
    for pending in events:
        seq += 1
        row = AuditEvent(
            seq=seq,
            at=at,
            actor=pending.actor,
            action=pending.action,
            instance_id=pending.instance_id,
            task_guid=pending.task_guid,
            definition_id=pending.definition_id,
            org_id=pending.org_id,
            payload=normalize(pending.payload),
            prev_hash=prev,
        )
        row.hash = prev = compute_hash(row)
        rows.append(row)
    session.execute(insert(AuditEvent.__table__), [_columns(r) for r in rows])
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=seq, hash=prev))
    return rows


def _columns(event: AuditEvent) -> dict[str, Any]:
    return {c.key: getattr(event, c.key) for c in AuditEvent.__table__.columns}


@dataclass
class Verdict:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events, head {self.head_hash}"
        return (
            f"audit chain BROKEN at seq {self.first_bad_seq}: {self.reason} ({self.checked} events checked)"
        )


def iter_events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    """Every event in order, by keyset pages, so a million events never sit in memory at once."""
    last = 0
    while True:
        rows = (
            session.execute(
                select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify(session: Session) -> Verdict:
    """Recompute the whole chain; name the first event that was edited, removed or inserted."""
    prev, expected_seq, checked = GENESIS, 1, 0
    for event in iter_events(session):
        if event.seq != expected_seq:
            return Verdict(False, checked, expected_seq, f"event {expected_seq} is missing", prev)
        if event.prev_hash != prev:
            return Verdict(False, checked, event.seq, "does not link to the event before it", prev)
        if compute_hash(event) != event.hash:
            return Verdict(False, checked, event.seq, "content does not match its hash", prev)
        prev, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
    head = session.get(AuditHead, HEAD_ID)
    if head is not None and (head.seq != checked or head.hash != prev):
        return Verdict(
            False, checked, checked + 1, f"chain ends at {checked} but its head says {head.seq}", prev
        )
    return Verdict(True, checked, head_hash=prev)
