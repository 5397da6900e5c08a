"""Supervision outside a process's own path: delegate a task, suspend, resume or terminate an instance.

None of these run the workflow, so none needs a unit of work: each changes rows under the
instance's (or task's) lock, in one transaction with its audit events. A suspended instance
keeps its tasks but refuses every step (``Engine._lock_instance``) and its timers are held; a
terminated one has its open tasks cancelled, its jobs cancelled and its incidents closed, and
is never touched again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from engine import audit, directory, facts
from engine.errors import Conflict, Forbidden, InvalidState, NotFound
from engine.models import GroupMember, HumanTask, Incident, Instance, Job, Membership, MessageWait, User

SUPERVISOR_ROLES = ("party_office", "admin")
MAX_REASON = 500


def delegate(s: Session, task_id: int, actor: str, to_username: str, now: datetime) -> HumanTask:
    """Hand an open task to someone else who may act on it.

    The current assignee may pass on their own task; the party office or an administrator above
    the task's organisation may (re)assign any open task. The new assignee must be someone the
    task could have gone to: in its candidate role or group, or, for a task with no pool,
    someone holding a role in its organisation or above.
    """
    user = directory.user_by_name(s, actor)
    row = s.get(HumanTask, task_id)
    if row is None:
        raise NotFound(f"no task {task_id}")
    if row.state != "open":
        raise InvalidState(f"task {task_id} is already {row.state}")
    if not may_delegate(s, row, user.id):
        raise Forbidden(f"{actor} may not delegate task {task_id}: only its assignee or the party office may")
    target = directory.user_by_name(s, to_username)
    if target.id == row.assignee_id:
        raise InvalidState(f"task {task_id} is already assigned to {to_username}")
    if not _may_take(s, row, target):
        raise Forbidden(f"{to_username} may not act on task {task_id}, so it cannot be delegated to them")
    previous = row.assignee_id
    guard = HumanTask.assignee_id.is_(None) if previous is None else HumanTask.assignee_id == previous
    done = s.execute(
        update(HumanTask)
        .where(HumanTask.id == task_id, HumanTask.state == "open", guard)
        .values(assignee_id=target.id, assignment="delegated")
    ).rowcount
    if done != 1:
        raise Conflict(f"task {task_id} was reassigned by someone else meanwhile; reload")
    instance = s.get(Instance, row.instance_id)
    audit.append(
        s,
        [
            audit.PendingEvent(
                actor=user.username,
                action="task.delegated",
                payload={
                    "task": row.id,
                    "title": row.title,
                    "from": _username(s, previous),
                    "to": target.username,
                    "as": "assignee" if previous == user.id else "supervisor",
                },
                instance_id=row.instance_id,
                task_guid=row.task_guid,
                definition_id=instance.definition_id if instance is not None else None,
                org_id=row.org_id,
            )
        ],
        now,
    )
    s.refresh(row)
    return row


def may_supervise(s: Session, user_id: int, org_id: int) -> bool:
    """Whether the user may delegate any task, suspend, resume or terminate instances of ``org_id``."""
    return directory.holds_role_above(s, user_id, org_id, SUPERVISOR_ROLES)


def may_delegate(s: Session, row: HumanTask, user_id: int) -> bool:
    """An open task may be passed on by its assignee, or by the party office or an admin above it."""
    return row.state == "open" and (row.assignee_id == user_id or may_supervise(s, user_id, row.org_id))


def delegates(s: Session, row: HumanTask) -> list[tuple[str, str]]:
    """Who a task could be handed to (username, display name): its candidate role or group's active
    holders, other than its assignee. Empty for a task with no pool (any role-holder may then take it)."""
    pool = directory.read_key(row.candidate_key)
    if isinstance(pool, tuple):
        people = select(Membership.user_id).where(Membership.org_id == pool[0], Membership.role == pool[1])
    elif isinstance(pool, str):
        people = select(GroupMember.user_id).where(GroupMember.group_name == pool)
    else:
        return []
    query = (
        select(User.username, User.display_name)
        .where(User.id.in_(people), User.active.is_(True))
        .order_by(User.username)
    )
    if row.assignee_id is not None:
        query = query.where(User.id != row.assignee_id)
    return [(u, n) for u, n in s.execute(query)]


def _may_take(s: Session, row: HumanTask, target: User) -> bool:
    if row.candidate_key is not None:
        return row.candidate_key in directory.user_keys(s, target.id)
    return directory.sees_org(s, target.id, row.org_id)


def _username(s: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return s.execute(select(User.username).where(User.id == user_id)).scalar()


def suspend(s: Session, instance_id: int, actor: str, reason: str, now: datetime) -> Instance:
    """Stop a running instance where it stands: its tasks stay, completing them is refused, timers wait."""
    instance, user = _supervised(s, instance_id, actor, "suspend")
    if instance.status != "running":
        raise InvalidState(
            f"instance {instance_id} is {instance.status}; only a running instance can be suspended"
        )
    instance.status, instance.updated_at = "suspended", now
    held = s.execute(
        update(Job).where(Job.instance_id == instance_id, Job.state == "pending").values(state="held")
    ).rowcount
    _record(s, instance, user, "instance.suspended", {"reason": _reason(reason), "held_jobs": held}, now)
    return instance


def resume(s: Session, instance_id: int, actor: str, reason: str, now: datetime) -> Instance:
    """Let a suspended instance go on; timers that fell due meanwhile fire at the next tick."""
    instance, user = _supervised(s, instance_id, actor, "resume")
    if instance.status != "suspended":
        raise InvalidState(f"instance {instance_id} is {instance.status}, not suspended")
    instance.status, instance.updated_at = "running", now
    released = s.execute(
        update(Job)
        .where(Job.instance_id == instance_id, Job.state == "held")
        .values(state="pending", lease_owner=None, lease_until=None)
    ).rowcount
    payload = {"reason": _reason(reason), "released_jobs": released}
    _record(s, instance, user, "instance.resumed", payload, now)
    return instance


def terminate(s: Session, instance_id: int, actor: str, reason: str, now: datetime) -> Instance:
    """End an instance for good: open tasks cancelled, jobs cancelled, waits dropped, incidents closed."""
    instance, user = _supervised(s, instance_id, actor, "terminate")
    if instance.status in ("completed", "terminated"):
        raise InvalidState(f"instance {instance_id} is already {instance.status}")
    previous = instance.status
    counted = facts.facts_of(instance.process_key, instance.data, previous)
    instance.status, instance.updated_at, instance.ended_at = "terminated", now, now
    facts.refresh(s, instance, counted)
    tasks = list(
        s.execute(
            select(HumanTask)
            .where(HumanTask.instance_id == instance_id, HumanTask.state == "open")
            .order_by(HumanTask.id)
        ).scalars()
    )
    for task in tasks:
        task.state, task.completed_at = "cancelled", now
    jobs = s.execute(
        update(Job)
        .where(Job.instance_id == instance_id, Job.state.in_(("pending", "held", "failed")))
        .values(state="cancelled", lease_owner=None, lease_until=None)
    ).rowcount
    s.execute(delete(MessageWait).where(MessageWait.instance_id == instance_id))
    incidents = list(
        s.execute(
            select(Incident).where(Incident.instance_id == instance_id, Incident.state == "open")
        ).scalars()
    )
    for incident in incidents:
        incident.state, incident.resolved_at = "resolved", now
    payload = {
        "reason": _reason(reason),
        "previous_status": previous,
        "cancelled_tasks": [t.id for t in tasks],
        "cancelled_jobs": jobs,
        "closed_incidents": [i.id for i in incidents],
    }
    events = [_event(instance, user, "instance.terminated", payload)]
    events += [
        _event(instance, user, "task.cancelled", {"task": t.id, "title": t.title, "reason": "terminated"}, t)
        for t in tasks
    ]
    s.flush()
    audit.append(s, events, now)
    return instance


def _supervised(s: Session, instance_id: int, actor: str, verb: str) -> tuple[Instance, User]:
    user = directory.user_by_name(s, actor)
    instance = s.get(Instance, instance_id, with_for_update=True)
    if instance is None:
        raise NotFound(f"no instance {instance_id}")
    if not may_supervise(s, user.id, instance.org_id):
        raise Forbidden(f"{actor} may not {verb} instances of this organisation: that needs the party office")
    return instance, user


def _reason(reason: str) -> str:
    return " ".join((reason or "").split())[:MAX_REASON]


def _event(
    instance: Instance, user: User, action: str, payload: dict, task: HumanTask | None = None
) -> audit.PendingEvent:
    return audit.PendingEvent(
        actor=user.username,
        action=action,
        payload=payload,
        instance_id=instance.id,
        task_guid=task.task_guid if task is not None else None,
        definition_id=instance.definition_id,
        org_id=instance.org_id,
    )


def _record(s: Session, instance: Instance, user: User, action: str, payload: dict, now: datetime) -> None:
    s.flush()  # bumps the revision: a page loaded before this change is refused as stale
    audit.append(s, [_event(instance, user, action, payload)], now)
