"""Read models: the inbox, an instance, a task. They read projections, never a workflow's state."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import Session

from engine import directory
from engine.bundle import BPMN_NS, SPIFF_NS
from engine.directory import org_subtree
from engine.errors import Forbidden, NotFound
from engine.models import Definition, HumanTask, Incident, Instance, Membership, Organisation, User
from engine.safexml import parse_xml

SORTS = ("id", "newest", "due", "priority")
_NO_DUE_DATE = datetime(9999, 12, 31, tzinfo=UTC)  # undated tasks sort after every dated one


@dataclass
class InboxFilter:
    process: str | None = None
    stage: str | None = None
    org_id: int | None = None
    overdue_at: datetime | None = None  # only tasks due before this moment
    mine_only: bool = False  # only tasks assigned to me (claimed or owned)
    claimed_only: bool = False  # only tasks I claimed from a role or group (not those the process gave me)
    unclaimed_only: bool = False  # only unclaimed tasks offered to a role or group I hold
    # id: oldest first; newest; due: soonest due first, undated last; priority: highest first, then due
    sort: str = "id"
    after_id: int | None = None  # keyset paging: the rows after this one in ``sort`` order
    limit: int = 50


def inbox(s: Session, user_id: int, f: InboxFilter | None = None) -> list[HumanTask]:
    """Open tasks a user may act on: assigned to them, or unclaimed in a role or group they hold.

    One query per source (mine; unclaimed for each of my few candidate keys), each an equality
    lookup read in id order off an index, merged here. A single OR / IN query lets the planners
    pick badly: SQLite answered "assignee_id IS NULL" from the assignee index (131 ms p95 at 100k
    open tasks), PostgreSQL walked the primary key filtering out 13,000 rows (bench/engine.py).
    Other sorts order each source the same way and merge by the same key; paging is keyset on
    that key (the anchor row's values are read back by id), so pages stay stable under change.
    """
    f = f or InboxFilter()
    if f.sort not in SORTS:
        raise ValueError(f"unknown inbox sort '{f.sort}'; one of {', '.join(SORTS)}")
    order = _ordering(f.sort)
    after = _after(s, f, order)
    rows: list[HumanTask] = []
    for who in _sources(s, user_id, f):
        query = _filtered(select(HumanTask).where(who, HumanTask.state == "open"), f)
        if after is not None:
            query = query.where(after)
        query = query.order_by(*(col.desc() if desc else col for col, desc in order))
        rows.extend(s.execute(query.limit(f.limit)).scalars())
    descending = [desc for _, desc in order]
    return sorted(rows, key=lambda r: _sort_key(r, f.sort, descending))[: f.limit]


def inbox_count(s: Session, user_id: int, cap: int = 100, f: InboxFilter | None = None) -> int:
    """How many open tasks ``inbox`` would list, counted up to ``cap`` (the nav shows "99+").

    Each source is counted over at most ``cap`` index entries, so the count stays cheap for a
    role with a backlog of thousands. ``f`` narrows it like the inbox (its paging is ignored).
    """
    f = f or InboxFilter()
    total = 0
    for who in _sources(s, user_id, f):
        query = _filtered(select(HumanTask.id).where(who, HumanTask.state == "open"), f)
        capped = query.limit(cap).subquery()
        total += s.execute(select(func.count()).select_from(capped)).scalar_one()
    return min(total, cap)


def inbox_facets(s: Session, user_id: int) -> list[tuple[str, str | None, int]]:
    """The distinct (process, stage, organisation) of a user's open tasks: the inbox's filter choices."""
    found: set[tuple[str, str | None, int]] = set()
    for who in _sources(s, user_id, InboxFilter()):
        query = (
            select(HumanTask.process_key, HumanTask.stage, HumanTask.org_id)
            .where(who, HumanTask.state == "open")
            .distinct()
        )
        found.update((p, st, o) for p, st, o in s.execute(query))
    return sorted(found, key=lambda t: (t[0], t[1] or "", t[2]))


def _sources(s: Session, user_id: int, f: InboxFilter) -> list[ColumnElement[bool]]:
    """One condition per index the inbox reads: assigned to me, and unclaimed per candidate key."""
    sources: list[ColumnElement[bool]] = []
    if not f.unclaimed_only:
        mine = HumanTask.assignee_id == user_id
        sources.append(mine & (HumanTask.assignment == "claim") if f.claimed_only else mine)
    if not (f.mine_only or f.claimed_only):
        sources += [
            (HumanTask.candidate_key == key) & HumanTask.assignee_id.is_(None)
            for key in directory.user_keys(s, user_id)
        ]
    return sources


def _due() -> ColumnElement[datetime]:
    return func.coalesce(HumanTask.due_at, literal(_NO_DUE_DATE, HumanTask.due_at.type))


def _ordering(sort: str) -> list[tuple[ColumnElement[Any], bool]]:
    """(column, descending) pairs; every ordering ends in the id, so it is total."""
    return {
        "id": [(HumanTask.id, False)],
        "newest": [(HumanTask.id, True)],
        "due": [(_due(), False), (HumanTask.id, False)],
        "priority": [(HumanTask.priority, True), (_due(), False), (HumanTask.id, False)],
    }[sort]


def _values(row: HumanTask, sort: str) -> list[Any]:
    due = row.due_at or _NO_DUE_DATE
    return {
        "id": [row.id],
        "newest": [row.id],
        "due": [due, row.id],
        "priority": [row.priority, due, row.id],
    }[sort]


def _sort_key(row: HumanTask, sort: str, descending: list[bool]) -> tuple[Any, ...]:
    """``_ordering`` as a Python key, for merging the sources' pages.

    ``descending`` comes from ``_ordering`` once per call of ``inbox``: building the SQL
    expressions again for every row cost about a millisecond each.
    """
    values = _values(row, sort)
    return tuple(-v if desc else v for v, desc in zip(values, descending, strict=True))


def _after(s: Session, f: InboxFilter, order: list[tuple[ColumnElement[Any], bool]]) -> Any:
    """Rows strictly after the anchor ``f.after_id`` in the ordering (lexicographic), or None."""
    if not f.after_id:
        return None
    anchor = s.get(HumanTask, f.after_id)
    if anchor is None:
        return None
    values = _values(anchor, f.sort)
    clauses = []
    for i, (col, desc) in enumerate(order):
        equal = [c == v for (c, _), v in zip(order[:i], values[:i], strict=True)]
        clauses.append(and_(*equal, col < values[i] if desc else col > values[i]))
    return or_(*clauses)


def _filtered(query: Select[Any], f: InboxFilter) -> Select[Any]:
    if f.process:
        query = query.where(HumanTask.process_key == f.process)
    if f.stage:
        query = query.where(HumanTask.stage == f.stage)
    if f.org_id:
        query = query.where(HumanTask.org_id == f.org_id)
    if f.overdue_at:
        query = query.where(HumanTask.due_at < f.overdue_at)
    return query


@dataclass
class InstanceView:
    id: int
    process_key: str
    status: str
    stage: str | None
    title: str | None
    org_id: int
    revision: int
    data: dict[str, Any]
    open_tasks: list[HumanTask]
    incidents: list[Incident]


def can_see_instance(s: Session, user: User, instance: Instance) -> bool:
    if instance.started_by_id == user.id or directory.sees_org(s, user.id, instance.org_id):
        return True
    hit = s.execute(
        select(HumanTask.id)
        .where(HumanTask.instance_id == instance.id, HumanTask.assignee_id == user.id)
        .limit(1)
    ).first()
    return hit is not None


def instance_view(s: Session, instance_id: int, viewer: User | None = None) -> InstanceView:
    """An instance's status, data and open tasks; ``viewer`` None means a trusted caller (CLI, tests)."""
    inst = s.get(Instance, instance_id)
    if inst is None:
        raise NotFound(f"no instance {instance_id}")
    if viewer is not None and not can_see_instance(s, viewer, inst):
        raise Forbidden(f"{viewer.username} may not see instance {instance_id}")
    tasks = s.execute(
        select(HumanTask)
        .where(HumanTask.instance_id == instance_id, HumanTask.state == "open")
        .order_by(HumanTask.id)
    ).scalars()
    incidents = s.execute(
        select(Incident).where(Incident.instance_id == instance_id, Incident.state == "open")
    ).scalars()
    return InstanceView(
        id=inst.id,
        process_key=inst.process_key,
        status=inst.status,
        stage=inst.stage,
        title=inst.title,
        org_id=inst.org_id,
        revision=inst.revision,
        data=dict(inst.data or {}),
        open_tasks=list(tasks),
        incidents=list(incidents),
    )


# --- instance lists, stages and diagrams (the instances pages) ------------------------------------


def visible_org_ids(user_id: int) -> Select[tuple[int]]:
    """Organisations whose instances a user sees: ``directory.sees_org`` for every organisation, in SQL.

    A role held in an organisation reaches it and everything below it, so the list is the subtrees
    under the user's memberships.
    """
    return org_subtree(select(Membership.org_id).where(Membership.user_id == user_id), "seen_orgs")


def visible_orgs(s: Session, user_id: int) -> list[Organisation]:
    """The organisations a user sees, hence may start work in (``Engine.start`` asks the same)."""
    query = select(Organisation).where(Organisation.id.in_(visible_org_ids(user_id)))
    return list(s.execute(query.order_by(Organisation.code)).scalars())


@dataclass
class InstanceFilter:
    process: str | None = None
    status: str | None = None
    stage: str | None = None
    org_id: int | None = None  # this organisation and every one below it
    started_from: datetime | None = None  # started at or after
    started_before: datetime | None = None  # started strictly before
    text: str | None = None  # part of the title, case-insensitive
    before_id: int | None = None  # keyset paging, newest first: only ids below this one
    limit: int = 25


@dataclass(frozen=True)
class InstanceRow:
    """One line of the instance list: the summary columns, never the serialized state."""

    id: int
    process_key: str
    process_name: str
    title: str | None
    status: str
    stage: str | None
    org_id: int
    org_name: str
    started_by: str
    started_at: datetime
    updated_at: datetime


def seen_by(user_id: int) -> ColumnElement[bool]:
    """``can_see_instance``'s rule as a condition on ``Instance``, for lists (the web's and the API's).

    Seen: instances of the user's organisations and those below them, plus those they started or
    hold a task in.
    """
    return or_(
        Instance.org_id.in_(visible_org_ids(user_id)),
        Instance.started_by_id == user_id,
        Instance.id.in_(select(HumanTask.instance_id).where(HumanTask.assignee_id == user_id)),
    )


def instance_list(s: Session, user_id: int, f: InstanceFilter | None = None) -> list[InstanceRow]:
    """Instances a user may see (``seen_by``), newest first, ``f.limit`` at most.

    Paged by id (``before_id``) so a page stays stable while instances are started.
    """
    f = f or InstanceFilter()
    seen = seen_by(user_id)
    query = (
        select(
            Instance.id,
            Instance.process_key,
            Definition.name,
            Instance.title,
            Instance.status,
            Instance.stage,
            Instance.org_id,
            Organisation.name,
            User.display_name,
            Instance.started_at,
            Instance.updated_at,
        )
        .join(Definition, Definition.id == Instance.definition_id)
        .join(Organisation, Organisation.id == Instance.org_id)
        .join(User, User.id == Instance.started_by_id)
        .where(seen)
    )
    if f.process:
        query = query.where(Instance.process_key == f.process)
    if f.status:
        query = query.where(Instance.status == f.status)
    if f.stage:
        query = query.where(Instance.stage == f.stage)
    if f.org_id:
        chosen = select(Organisation.id).where(Organisation.id == f.org_id)
        query = query.where(Instance.org_id.in_(org_subtree(chosen, "chosen_orgs")))
    if f.started_from:
        query = query.where(Instance.started_at >= f.started_from)
    if f.started_before:
        query = query.where(Instance.started_at < f.started_before)
    if f.text:
        query = query.where(Instance.title.icontains(f.text, autoescape=True))
    if f.before_id:
        query = query.where(Instance.id < f.before_id)
    rows = s.execute(query.order_by(Instance.id.desc()).limit(f.limit))
    return [InstanceRow(*row) for row in rows]


@dataclass(frozen=True)
class Diagram:
    """A deployed process as people look at it: its BPMN file and its stages in process order."""

    bpmn: str
    stages: list[str]


_DIAGRAMS: OrderedDict[str, Diagram] = OrderedDict()
_DIAGRAMS_LOCK = threading.Lock()
_DIAGRAMS_KEPT = 32


def definition_diagram(s: Session, definition_id: int) -> Diagram:
    """The BPMN file defining a deployed process, and its stages; cached by content hash (immutable).

    The bundle's sources are read only on a cache miss.
    """
    row = s.execute(
        select(Definition.content_hash, Definition.process_key).where(Definition.id == definition_id)
    ).first()
    if row is None:
        raise NotFound(f"no definition {definition_id}")
    with _DIAGRAMS_LOCK:
        if row.content_hash in _DIAGRAMS:
            _DIAGRAMS.move_to_end(row.content_hash)
            return _DIAGRAMS[row.content_hash]
    sources = s.execute(select(Definition.sources).where(Definition.id == definition_id)).scalar_one()
    diagram = _diagram(sources, row.process_key)
    with _DIAGRAMS_LOCK:
        _DIAGRAMS[row.content_hash] = diagram
        while len(_DIAGRAMS) > _DIAGRAMS_KEPT:
            _DIAGRAMS.popitem(last=False)
    return diagram


def _bpmn(tag: str) -> str:
    return f"{{{BPMN_NS}}}{tag}"


def _diagram(sources: dict[str, str], process_key: str) -> Diagram:
    for name, text in sorted(sources.items()):
        if not name.lower().endswith((".bpmn", ".bpmn20.xml")):
            continue
        root = parse_xml(text.encode("utf-8"), name)
        for process in root.iter(_bpmn("process")):
            if process.get("id") == process_key:
                return Diagram(bpmn=text, stages=stage_order(process))
    raise NotFound(f"no BPMN file defines process '{process_key}'")


STAGE_ELEMENTS = ("subProcess", "callActivity", "transaction")


def stage_order(process: Any) -> list[str]:
    """The stages of a process element, in the order the process reaches them.

    A stage is what ``projection.stage_of`` reports: a top-level element's ``stage`` property, or a
    top-level sub-process's name. They are ordered by distance from the start event along the
    sequence flows; stages reached at the same distance (parallel branches) keep document order.
    """
    nodes = [child for child in process if isinstance(child.tag, str)]
    order = {node.get("id"): i for i, node in enumerate(nodes)}
    outgoing: dict[str, list[str]] = {}
    for flow in process.iter(_bpmn("sequenceFlow")):
        if flow.getparent() is process:
            outgoing.setdefault(flow.get("sourceRef"), []).append(flow.get("targetRef"))
    starts = [n.get("id") for n in nodes if n.tag == _bpmn("startEvent")]
    distance = {node_id: 0 for node_id in starts}
    frontier = list(starts)
    while frontier:
        following = []
        for node_id in frontier:
            for target in outgoing.get(node_id, []):
                if target not in distance:
                    distance[target] = distance[node_id] + 1
                    following.append(target)
        frontier = following
    stages: list[str] = []
    for node in sorted(nodes, key=lambda n: (distance.get(n.get("id"), len(nodes)), order[n.get("id")])):
        if node.get("triggeredByEvent") == "true":
            continue
        stage = _stage_property(node)
        if stage is None and node.tag in tuple(_bpmn(t) for t in STAGE_ELEMENTS):
            stage = node.get("name")
        if stage and stage not in stages:
            stages.append(stage)
    return stages


def _stage_property(node: Any) -> str | None:
    path = f"{_bpmn('extensionElements')}/{{{SPIFF_NS}}}properties/{{{SPIFF_NS}}}property"
    for prop in node.iterfind(path):
        if prop.get("name") == "stage" and prop.get("value"):
            return str(prop.get("value"))
    return None
