"""Read models: the inbox, an instance, a task. They read projections, never a workflow's state."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from engine import directory
from engine.bundle import BPMN_NS, SPIFF_NS
from engine.errors import Forbidden, NotFound
from engine.models import Definition, HumanTask, Incident, Instance, Membership, Organisation, User
from engine.safexml import parse_xml


@dataclass
class InboxFilter:
    process: str | None = None
    stage: str | None = None
    org_id: int | None = None
    overdue_at: datetime | None = None  # only tasks due before this moment
    mine_only: bool = False  # only tasks assigned to me (claimed or owned)
    after_id: int | None = None  # keyset paging on id, for stable pages under concurrent change
    limit: int = 50


def inbox(s: Session, user_id: int, f: InboxFilter | None = None) -> list[HumanTask]:
    """Open tasks a user may act on: assigned to them, or unclaimed in a role or group they hold.

    One query per source (mine; unclaimed for each of my few candidate keys), each an equality
    lookup read in id order off an index, merged here. A single OR / IN query lets the planners
    pick badly: SQLite answered "assignee_id IS NULL" from the assignee index (131 ms p95 at 100k
    open tasks), PostgreSQL walked the primary key filtering out 13,000 rows (bench/engine.py).
    """
    f = f or InboxFilter()
    sources = [HumanTask.assignee_id == user_id]
    if not f.mine_only:
        sources += [
            (HumanTask.candidate_key == key) & HumanTask.assignee_id.is_(None)
            for key in directory.user_keys(s, user_id)
        ]
    rows: list[HumanTask] = []
    for who in sources:
        query = _filtered(select(HumanTask).where(who, HumanTask.state == "open"), f)
        rows.extend(s.execute(query.order_by(HumanTask.id).limit(f.limit)).scalars())
    return sorted(rows, key=lambda r: r.id)[: f.limit]


def inbox_count(s: Session, user_id: int, cap: int = 100) -> int:
    """How many open tasks ``inbox`` would list, counted up to ``cap`` (the nav shows "99+").

    Each source is counted over at most ``cap`` index entries, so the count stays cheap for a
    role with a backlog of thousands.
    """
    sources = [HumanTask.assignee_id == user_id]
    sources += [
        (HumanTask.candidate_key == key) & HumanTask.assignee_id.is_(None)
        for key in directory.user_keys(s, user_id)
    ]
    total = 0
    for who in sources:
        capped = select(HumanTask.id).where(who, HumanTask.state == "open").limit(cap).subquery()
        total += s.execute(select(func.count()).select_from(capped)).scalar_one()
    return min(total, cap)


def _filtered(query: Select[tuple[HumanTask]], f: InboxFilter) -> Select[tuple[HumanTask]]:
    if f.process:
        query = query.where(HumanTask.process_key == f.process)
    if f.stage:
        query = query.where(HumanTask.stage == f.stage)
    if f.org_id:
        query = query.where(HumanTask.org_id == f.org_id)
    if f.overdue_at:
        query = query.where(HumanTask.due_at < f.overdue_at)
    if f.after_id:
        query = query.where(HumanTask.id > f.after_id)
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
