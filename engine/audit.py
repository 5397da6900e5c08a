"""The hash-chained audit trail: 执行必记录, and proof that no record was altered.

Each event's hash covers its canonical content and the previous event's hash. Appends lock the
single ``audit_head`` row, so concurrent writers queue for a moment at commit time and the chain
never forks; ``seq`` is unique and gap-free, so a deleted event shows as a gap.

A chain can be rewritten consistently by whoever holds the database, so its head is published:
a checkpoint (``audit_checkpoint``) records a verified ``(seq, hash)``; an auditor keeps a copy
outside the system and later proves with ``verify(against=...)`` that history up to it is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, func, insert, select, update
from sqlalchemy.orm import Session

from engine.errors import EngineError
from engine.models import AuditCheckpoint, AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64
HEAD_ID = 1
BATCH = 5000  # events per keyset page when walking the chain: constant memory, few round trips
SYSTEM = "system"
# One encoder for every hash: json.dumps with options builds a new encoder per call, and verify
# calls it a million times.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


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


def canonical(event: Any) -> bytes:
    """The bytes an event's hash covers. ``event`` is an ``AuditEvent`` or a row with its columns.

    The time is written in UTC whatever zone the database session hands it back in (a
    PostgreSQL server set to Asia/Shanghai returns +08:00), so the hash depends on the instant only.
    """
    body = {
        "seq": event.seq,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "instance_id": event.instance_id,
        "task_guid": event.task_guid,
        "definition_id": event.definition_id,
        "org_id": event.org_id,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
    }
    return _CANONICAL.encode(body).encode("utf-8")


def compute_hash(event: Any) -> str:
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


# --- reading the chain ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A ``(seq, hash)`` pair: a checkpoint, or a head an auditor exported and kept elsewhere."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``{"seq": 120, "hash": "ab…"}`` (as ``export-head`` prints it) or ``120:ab…``; else ValueError."""
        text = text.strip()
        seq: Any
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"not valid JSON: {err.msg}") from err
            if not isinstance(data, dict) or "seq" not in data or "hash" not in data:
                raise ValueError('expected {"seq": N, "hash": "<64 hex digits>"}')
            seq, digest = data["seq"], data["hash"]
        else:
            seq, _, digest = text.partition(":")
        try:
            number = int(seq)
        except (TypeError, ValueError) as err:
            raise ValueError(f"seq must be a whole number, not {seq!r}") from err
        if isinstance(seq, bool) or number < 1:
            raise ValueError("seq must be 1 or more")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("hash must be 64 lower-case hex digits")
        return cls(number, digest)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


def head(session: Session) -> Anchor:
    """The chain's head as its row says, without locking it (``Anchor(0, GENESIS)`` when empty)."""
    row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)).first()
    return Anchor(row.seq, row.hash) if row is not None else Anchor(0, GENESIS)


def iter_pages(
    session: Session,
    after: int = 0,
    upto: int | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    batch: int = BATCH,
) -> Iterator[list[Row[Any]]]:
    """Events with ``after < seq <= upto`` (and ``where``) in seq order, as keyset pages of ``batch``.

    Plain rows, not ORM objects: a million of them are walked without an identity map, and only
    one page is in memory at a time.
    """
    table = AuditEvent.__table__
    last = after
    while True:
        query = select(table).where(table.c.seq > last, *where)
        if upto is not None:
            query = query.where(table.c.seq <= upto)
        rows = session.execute(query.order_by(table.c.seq).limit(batch)).all()
        if rows:
            yield rows
        if len(rows) < batch:
            return
        last = rows[-1].seq


def iter_rows(
    session: Session,
    after: int = 0,
    upto: int | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    batch: int = BATCH,
) -> Iterator[Row[Any]]:
    """``iter_pages``, one event at a time."""
    for rows in iter_pages(session, after, upto, where, batch):
        yield from rows


def iter_events(session: Session, batch: int = BATCH) -> Iterator[AuditEvent]:
    """Every event in order as ORM objects, by keyset pages, so a million never sit in memory at once."""
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


# --- verification --------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What ``verify`` found: ``kind`` names a failure for the UI to translate, ``reason`` in English."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS
    head_seq: int = 0
    kind: str = ""  # missing|link|hash|head|beyond|checkpoint|against|anchor
    since: int = 0  # verification started after this seq (0: from the first event)
    against: Anchor | None = None

    def __str__(self) -> str:
        if self.ok:
            scope = f" after seq {self.since}" if self.since else ""
            text = f"audit chain intact: {self.checked} events{scope}, head {self.head_seq} {self.head_hash}"
            if self.against is not None:
                text += f"; history up to seq {self.against.seq} matches {self.against.hash}"
            return text
        return (
            f"audit chain BROKEN at seq {self.first_bad_seq}: {self.reason} ({self.checked} events checked)"
        )


class ChainBroken(EngineError):
    """The chain failed verification, so no checkpoint was recorded over it."""

    code = "audit_chain_broken"

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(str(verdict), {"first_bad_seq": verdict.first_bad_seq, "kind": verdict.kind})
        self.verdict = verdict


def verify(
    session: Session,
    *,
    since: Anchor | None = None,
    against: Anchor | None = None,
    batch: int = BATCH,
) -> Verdict:
    """Recompute the chain; name the first event that was edited, removed, inserted or reordered.

    The head is read first and only events up to it are walked, so appends committed while a long
    verification runs are neither reported as tampering nor needed in memory. ``since`` starts at
    a trusted point (a checkpoint) instead of the first event; ``against`` is a head exported
    earlier: history up to it must hash to exactly it. Checkpoints stored in the database are
    compared as the walk passes them, so history rewritten consistently behind one is caught too.
    """
    top = head(session)
    start = since or Anchor(0, GENESIS)
    checked = 0

    def broken(seq: int, kind: str, reason: str, prev: str) -> Verdict:
        return Verdict(False, checked, seq, reason, prev, top.seq, kind, start.seq, against)

    if start.seq > 0:
        table = AuditEvent.__table__
        stored = session.execute(select(table).where(table.c.seq == start.seq)).first()
        if stored is None or stored.hash != start.hash or compute_hash(stored) != stored.hash:
            what = "is missing" if stored is None else "no longer matches the hash it was verified at"
            return broken(start.seq, "anchor", f"event {start.seq} {what}", start.hash)
    if against is not None and against.seq > top.seq:
        return broken(
            top.seq + 1, "against", f"the chain ends at {top.seq} but the exported head is {against.seq}", ""
        )
    known = _checkpoint_hashes(session, start.seq, top.seq)
    if against is not None:
        known[against.seq] = (against.hash, "the exported head")

    prev, expected = start.hash, start.seq + 1
    for row in iter_rows(session, after=start.seq, upto=top.seq, batch=batch):
        if row.seq != expected:
            return broken(expected, "missing", f"event {expected} is missing", prev)
        if row.prev_hash != prev:
            return broken(row.seq, "link", "does not link to the event before it", prev)
        if compute_hash(row) != row.hash:
            return broken(row.seq, "hash", "content does not match its hash", prev)
        if row.seq in known and known[row.seq][0] != row.hash:
            kind = "against" if against is not None and row.seq == against.seq else "checkpoint"
            return broken(row.seq, kind, f"its hash differs from {known[row.seq][1]}", prev)
        prev, expected, checked = row.hash, expected + 1, checked + 1
    if expected - 1 != top.seq:
        return broken(expected, "missing", f"chain ends at {expected - 1} but its head says {top.seq}", prev)
    if prev != top.hash:
        return broken(top.seq, "head", f"the head's hash does not match event {top.seq}", prev)
    beyond = _beyond_head(session, top.seq)
    if beyond is not None:
        return broken(beyond, "beyond", f"event {beyond} lies beyond the chain's head", prev)
    return Verdict(True, checked, head_hash=prev, head_seq=top.seq, since=start.seq, against=against)


def _checkpoint_hashes(session: Session, after: int, upto: int) -> dict[int, tuple[str, str]]:
    """Stored checkpoints in the walked range (a few hundred a year: loaded whole)."""
    rows = session.execute(
        select(AuditCheckpoint.seq, AuditCheckpoint.hash, AuditCheckpoint.at).where(
            AuditCheckpoint.seq > after, AuditCheckpoint.seq <= upto
        )
    )
    return {seq: (digest, f"the checkpoint of {at:%Y-%m-%d %H:%M} UTC") for seq, digest, at in rows}


def _beyond_head(session: Session, head_seq: int) -> int | None:
    """The first event past the head that no honest append explains.

    An honest append commits its events and the head together, so the newest event seen *before*
    the head is read again can never be past that head. The order of the two reads matters on
    PostgreSQL, where each statement sees whatever committed before it began.
    """
    last = session.execute(select(func.max(AuditEvent.seq))).scalar()
    if last is None or last <= head_seq:
        return None
    now = head(session).seq
    if last <= now:
        return None
    return session.execute(
        select(func.min(AuditEvent.seq)).where(AuditEvent.seq > now, AuditEvent.seq <= last)
    ).scalar()


# --- checkpoints ---------------------------------------------------------------------------------


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.execute(
        select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
    ).scalar_one_or_none()


def checkpoint(session: Session, actor: str = SYSTEM, now: datetime | None = None) -> AuditCheckpoint:
    """Verify the chain since the latest checkpoint, then record the verified head as a new one.

    Runs in the caller's transaction. The walk happens before the head is locked, so writers are
    not held up by it; the checkpoint names the head that was verified, which may be a little
    behind the head at commit. Recording it is itself an audit event (``audit_checkpointed``).
    Raises ``ChainBroken`` rather than vouch for a broken chain.
    """
    now = now or utcnow()
    last = latest_checkpoint(session)
    verdict = verify(session, since=Anchor(last.seq, last.hash) if last is not None else None)
    if not verdict.ok:
        raise ChainBroken(verdict)
    return _record_checkpoint(session, Anchor(verdict.head_seq, verdict.head_hash), actor, now)


def checkpoint_if_due(
    session: Session,
    every: timedelta = timedelta(days=1),
    now: datetime | None = None,
    actor: str = SYSTEM,
) -> AuditCheckpoint | None:
    """A checkpoint if the latest is older than ``every`` (or none exists), else None: for the worker's tick.

    Cheap when not due (one indexed read). Safe to call from several workers at once: the head
    lock serialises them and the second finds the first's checkpoint fresh.
    """
    now = now or utcnow()
    if not _due(session, every, now):
        return None
    last = latest_checkpoint(session)
    verdict = verify(session, since=Anchor(last.seq, last.hash) if last is not None else None)
    if not verdict.ok:
        raise ChainBroken(verdict)
    if verdict.head_seq == 0:  # nothing recorded yet: nothing to vouch for
        return None
    _lock_head(session)
    if not _due(session, every, now):  # another worker recorded one while we verified
        return None
    return _record_checkpoint(session, Anchor(verdict.head_seq, verdict.head_hash), actor, now)


def _due(session: Session, every: timedelta, now: datetime) -> bool:
    at = session.execute(select(func.max(AuditCheckpoint.at))).scalar()
    return at is None or at <= now - every


def _record_checkpoint(session: Session, verified: Anchor, actor: str, now: datetime) -> AuditCheckpoint:
    _lock_head(session)
    existing = session.execute(
        select(AuditCheckpoint).where(AuditCheckpoint.seq == verified.seq)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    if verified.seq == 0:
        raise EngineError("the audit trail is empty: there is no head to checkpoint yet")
    row = AuditCheckpoint(seq=verified.seq, hash=verified.hash, at=now, created_by=actor)
    session.add(row)
    session.flush()
    append(session, [PendingEvent(actor, "audit_checkpointed", verified.as_dict())], now)
    return row
