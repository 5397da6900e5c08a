"""Reading the audit trail for people: who may see what, filters, keyset pages, timelines, chain status.

Every list is a keyset page on ``seq`` (never OFFSET), so the thousandth page of a million events
costs what the first does. Filters use the indexes the trail has (``ix_audit_actor``,
``ix_audit_instance``, the action index, the primary key); a time range is first narrowed to a
range of ``seq`` by binary search on the primary key, because ``at`` grows with ``seq``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, or_, select
from sqlalchemy.orm import Session

from engine import audit
from engine.errors import Forbidden, NotFound
from engine.models import AuditCheckpoint, AuditEvent, Definition, Instance, Membership, Organisation, User

AUDIT_ROLES = ("auditor", "admin")
PAGE = 50
TIMELINE_PAGE = 200
# ``at`` is taken when a unit of work starts, ``seq`` when it commits, so under load a few events
# commit out of clock order. Seq bounds found for a time range are widened by this many events;
# the exact ``at`` condition still decides, so the widening only costs a little scanning.
TIME_SLACK = 10_000

T = AuditEvent.__table__.c


# --- who sees what -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The organisations whose events a reader may see; ``None`` is the whole trail, global events too.

    An auditor (or administrator) of the top organisation sees everything; one appointed in a
    branch sees that branch and the organisations below it, and not the system-wide events
    (sign-ins, deployments) that belong to no organisation.
    """

    org_ids: frozenset[int] | None

    def allows(self, org_id: int | None) -> bool:
        return self.org_ids is None or (org_id is not None and org_id in self.org_ids)


def scope_for(s: Session, user_id: int) -> Scope:
    """The reader's scope; Forbidden for someone who is neither auditor nor administrator anywhere."""
    orgs = set(
        s.execute(
            select(Membership.org_id).where(Membership.user_id == user_id, Membership.role.in_(AUDIT_ROLES))
        ).scalars()
    )
    if not orgs:
        raise Forbidden("reading the audit trail needs the auditor or admin role")
    roots = s.execute(
        select(Organisation.id).where(Organisation.id.in_(orgs), Organisation.parent_id.is_(None))
    )
    if roots.first() is not None:
        return Scope(None)
    return Scope(frozenset(subtree(s, orgs)))


def subtree(s: Session, org_ids: Iterable[int]) -> set[int]:
    """The organisations and every organisation below them (one query per level of the tree)."""
    found = set(org_ids)
    frontier = set(found)
    while frontier:
        children = set(
            s.execute(select(Organisation.id).where(Organisation.parent_id.in_(frontier))).scalars()
        )
        frontier = children - found
        found |= frontier
    return found


# --- filters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What the reader asked for. ``org_id`` includes the organisations below it; ``until`` is exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    org_id: int | None = None
    process: str | None = None
    instance_id: int | None = None

    def as_payload(self) -> dict[str, Any]:
        """The filters as they are recorded in the ``audit_exported`` event."""
        values = {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "actor": self.actor,
            "action": self.action,
            "org_id": self.org_id,
            "process": self.process,
            "instance_id": self.instance_id,
        }
        return {k: v for k, v in values.items() if v is not None}


def conditions(s: Session, f: AuditFilter, scope: Scope) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a filter within a scope (each one an indexed column where one exists)."""
    where: list[ColumnElement[bool]] = []
    if scope.org_ids is not None:
        where.append(T.org_id.in_(sorted(scope.org_ids)))
    if f.actor:
        where.append(T.actor == f.actor)
    if f.action:
        where.append(T.action == f.action)
    if f.instance_id is not None:
        where.append(T.instance_id == f.instance_id)
    if f.org_id is not None:
        where.append(T.org_id.in_(sorted(subtree(s, [f.org_id]))))
    if f.process:
        # claims and reminders name their instance but not its definition: match either
        where.append(
            or_(
                T.definition_id.in_(select(Definition.id).where(Definition.process_key == f.process)),
                T.instance_id.in_(select(Instance.id).where(Instance.process_key == f.process)),
            )
        )
    if f.since is not None:
        where += [T.at >= f.since, T.seq >= first_seq_at(s, f.since) - TIME_SLACK]
    if f.until is not None:
        where += [T.at < f.until, T.seq < first_seq_at(s, f.until) + TIME_SLACK]
    return where


def first_seq_at(s: Session, moment: datetime) -> int:
    """The first seq recorded at or after ``moment``, by binary search on the primary key (~20 look-ups)."""
    lo, hi = 1, audit.head(s).seq + 1
    while lo < hi:
        mid = (lo + hi) // 2
        at = s.execute(select(T.at).where(T.seq >= mid).order_by(T.seq).limit(1)).scalar()
        if at is None or at >= moment:
            hi = mid
        else:
            lo = mid + 1
    return lo


# --- what a row looks like to a reader -----------------------------------------------------------


@dataclass
class EventView:
    seq: int
    at: datetime
    actor: str
    action: str
    instance_id: int | None
    task_guid: str | None
    definition_id: int | None
    org_id: int | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    actor_name: str | None = None
    org_code: str | None = None
    org_name: str | None = None
    process: str | None = None

    @property
    def diff(self) -> dict[str, Any] | None:
        """The before/after of instance data a completion carries, if this event has one."""
        value = self.payload.get("diff") if isinstance(self.payload, dict) else None
        return value if isinstance(value, dict) else None


class Names:
    """Codes and names for the ids on a page: one small query per kind, never one per row."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.orgs: dict[int, tuple[str, str]] = {}
        self.processes: dict[int, str] = {}
        self.instance_processes: dict[int, str] = {}
        self.people: dict[str, str] = {}

    def resolve(self, rows: Iterable[Row[Any]], people: bool = True) -> list[EventView]:
        rows = list(rows)
        self._load_orgs({r.org_id for r in rows} - self.orgs.keys() - {None})
        self._load_definitions({r.definition_id for r in rows} - self.processes.keys() - {None})
        self._load_instances(
            {r.instance_id for r in rows if r.definition_id is None} - self.instance_processes.keys() - {None}
        )
        if people:
            self._load_people({r.actor for r in rows} - self.people.keys())
        return [self._view(r) for r in rows]

    def _view(self, r: Row[Any]) -> EventView:
        org = self.orgs.get(r.org_id) if r.org_id is not None else None
        process = self.processes.get(r.definition_id) if r.definition_id is not None else None
        if process is None and r.instance_id is not None:
            process = self.instance_processes.get(r.instance_id)
        return EventView(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            instance_id=r.instance_id,
            task_guid=r.task_guid,
            definition_id=r.definition_id,
            org_id=r.org_id,
            payload=r.payload if isinstance(r.payload, dict) else {"value": r.payload},
            prev_hash=r.prev_hash,
            hash=r.hash,
            actor_name=self.people.get(r.actor),
            org_code=org[0] if org else None,
            org_name=org[1] if org else None,
            process=process,
        )

    def _load_orgs(self, ids: set[int]) -> None:
        if ids:
            rows = self.s.execute(
                select(Organisation.id, Organisation.code, Organisation.name).where(Organisation.id.in_(ids))
            )
            self.orgs.update({i: (code, name) for i, code, name in rows})

    def _load_definitions(self, ids: set[int]) -> None:
        if ids:
            rows = self.s.execute(select(Definition.id, Definition.process_key).where(Definition.id.in_(ids)))
            self.processes.update({key: value for key, value in rows})

    def _load_instances(self, ids: set[int]) -> None:
        if ids:
            rows = self.s.execute(select(Instance.id, Instance.process_key).where(Instance.id.in_(ids)))
            self.instance_processes.update({key: value for key, value in rows})

    def _load_people(self, usernames: set[str]) -> None:
        if usernames:
            rows = self.s.execute(
                select(User.username, User.display_name).where(User.username.in_(usernames))
            )
            self.people.update({key: value for key, value in rows})


# --- pages ---------------------------------------------------------------------------------------


@dataclass
class Page:
    """Newest first. ``newer`` / ``older`` are the cursors of the neighbouring pages (None: no more)."""

    events: list[EventView]
    newer: int | None = None
    older: int | None = None


def page(
    s: Session,
    f: AuditFilter,
    scope: Scope,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE,
) -> Page:
    """One page of matching events: the newest, those older than ``before``, or those newer than ``after``."""
    where = conditions(s, f, scope)
    query = select(AuditEvent.__table__).where(*where)
    if after is not None:
        rows = s.execute(query.where(T.seq > after).order_by(T.seq).limit(limit)).all()[::-1]
    else:
        if before is not None:
            query = query.where(T.seq < before)
        rows = s.execute(query.order_by(T.seq.desc()).limit(limit)).all()
    if not rows:
        return Page([])
    newer = _exists(s, where, T.seq > rows[0].seq)
    older = _exists(s, where, T.seq < rows[-1].seq)
    return Page(
        Names(s).resolve(rows),
        newer=rows[0].seq if newer else None,
        older=rows[-1].seq if older else None,
    )


def _exists(s: Session, where: list[ColumnElement[bool]], bound: ColumnElement[bool]) -> bool:
    return s.execute(select(T.seq).where(*where, bound).limit(1)).first() is not None


def event(s: Session, seq: int, scope: Scope) -> EventView:
    """One event; NotFound as well when it is outside the reader's scope, so its existence does not leak."""
    row = s.execute(select(AuditEvent.__table__).where(T.seq == seq)).first()
    if row is None or not scope.allows(row.org_id):
        raise NotFound(f"no audit event {seq}")
    return Names(s).resolve([row])[0]


@dataclass
class Integrity:
    """One event's own check: its hash, and its links to the events on either side."""

    hash_ok: bool
    links_back: bool
    linked_forward: bool | None  # None: it is the newest event


def integrity(s: Session, view: EventView) -> Integrity:
    stored = s.execute(select(AuditEvent.__table__).where(T.seq == view.seq)).first()
    hash_ok = stored is not None and audit.compute_hash(stored) == stored.hash
    before = s.execute(select(T.hash).where(T.seq == view.seq - 1)).scalar()
    links_back = view.prev_hash == (before if view.seq > 1 else audit.GENESIS)
    after = s.execute(select(T.prev_hash).where(T.seq == view.seq + 1)).scalar()
    return Integrity(hash_ok, links_back, None if after is None else after == view.hash)


@dataclass
class Timeline:
    instance_id: int
    instance: Instance | None
    org_name: str | None
    events: list[EventView]
    later: int | None = None  # cursor: events after this seq


def timeline(
    s: Session, instance_id: int, scope: Scope, after: int = 0, limit: int = TIMELINE_PAGE
) -> Timeline:
    """An instance's events, oldest first, off ``ix_audit_instance``; NotFound outside the reader's scope."""
    instance = s.get(Instance, instance_id)
    org_id = instance.org_id if instance is not None else _first_org(s, instance_id)
    if org_id is None and instance is None:
        raise NotFound(f"no audit events for instance {instance_id}")
    if not scope.allows(org_id):
        raise NotFound(f"no audit events for instance {instance_id}")
    rows = s.execute(
        select(AuditEvent.__table__)
        .where(T.instance_id == instance_id, T.seq > after)
        .order_by(T.seq)
        .limit(limit + 1)
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    org_name = s.execute(select(Organisation.name).where(Organisation.id == org_id)).scalar()
    return Timeline(
        instance_id, instance, org_name, Names(s).resolve(rows), later=rows[-1].seq if more else None
    )


def _first_org(s: Session, instance_id: int) -> int | None:
    return s.execute(select(T.org_id).where(T.instance_id == instance_id).order_by(T.seq).limit(1)).scalar()


def find_instances(s: Session, text: str, scope: Scope, limit: int = 20) -> list[Instance]:
    """Instances whose title or business key contains ``text``: from "project X" to its id."""
    text = text.strip()
    if not text:
        return []
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    query = select(Instance).where(
        or_(Instance.title.like(pattern, escape="\\"), Instance.business_key.like(pattern, escape="\\"))
    )
    if scope.org_ids is not None:
        query = query.where(Instance.org_id.in_(sorted(scope.org_ids)))
    return list(s.execute(query.order_by(Instance.id.desc()).limit(limit)).scalars())


# --- chain status --------------------------------------------------------------------------------


@dataclass
class ChainStatus:
    """The chain as a status box tells it: what was verified, from where, and the latest checkpoint."""

    verdict: audit.Verdict
    basis: str  # genesis|checkpoint|window: where the verified stretch starts
    basis_seq: int
    checkpoint: AuditCheckpoint | None
    checked_at: datetime


@dataclass
class ChainMonitor:
    """Verifies the chain incrementally for a status box, so no page view walks a million events.

    The first call verifies from the latest checkpoint (or from the first event while the chain
    is short, or the newest ``window`` events of a long chain with no recent checkpoint); each
    later call goes on from the head it last verified, re-checking that head's stored hash.
    One monitor per process (the web app keeps one); the full walk is ``qizhi audit verify``.
    """

    window: int = 20_000
    _verified: audit.Anchor | None = None
    _basis: tuple[str, int] = ("genesis", 0)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, s: Session) -> ChainStatus:
        latest = audit.latest_checkpoint(s)
        top = audit.head(s)
        with self._lock:
            cached, basis = self._verified, self._basis
        if cached is None or cached.seq > top.seq:
            cached, basis = self._start(s, latest, top)
        verdict = audit.verify(s, since=cached if cached.seq else None)
        with self._lock:
            if verdict.ok:
                self._verified, self._basis = audit.Anchor(verdict.head_seq, verdict.head_hash), basis
            else:
                self._verified = None
        return ChainStatus(verdict, basis[0], basis[1], latest, audit.utcnow())

    def _start(
        self, s: Session, latest: AuditCheckpoint | None, top: audit.Anchor
    ) -> tuple[audit.Anchor, tuple[str, int]]:
        if latest is not None and top.seq - latest.seq <= self.window:
            return audit.Anchor(latest.seq, latest.hash), ("checkpoint", latest.seq)
        if top.seq <= self.window:
            return audit.Anchor(0, audit.GENESIS), ("genesis", 0)
        seq = top.seq - self.window
        stored = s.execute(select(T.hash).where(T.seq == seq)).scalar()
        return audit.Anchor(seq, stored or ""), ("window", seq)
