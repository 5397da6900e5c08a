"""Read models: the inbox, an instance, a task. They read projections, never a workflow's state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from engine import directory
from engine.errors import Forbidden, NotFound
from engine.models import HumanTask, Incident, Instance, User


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
    """Open tasks a user may act on: assigned to them, or unclaimed in a role or group they hold."""
    f = f or InboxFilter()
    mine = HumanTask.assignee_id == user_id
    keys = directory.user_keys(s, user_id)
    if f.mine_only or not keys:
        who = mine
    else:
        who = or_(mine, (HumanTask.assignee_id.is_(None)) & HumanTask.candidate_key.in_(keys))
    query = select(HumanTask).where(HumanTask.state == "open", who)
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
    return list(s.execute(query.order_by(HumanTask.id).limit(f.limit)).scalars())


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
