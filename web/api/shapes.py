"""Rows to JSON in the shapes web/api/schemas.py declares: ids become usernames and org codes.

People and organisations are named the way a client names them when it calls (``"org": "B1"``,
``"assignee": "sec1"``), never by database id. :class:`Names` fetches those in two queries per
answer, however many rows it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.audit import Verdict
from engine.models import AuditEvent, Definition, HumanTask, Incident, Instance, Organisation, User
from web.commands.tasks import HOLDING

T = TypeVar("T")


def when(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as JSON clients parse it everywhere."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Names:
    """Usernames and organisation codes for the ids a set of rows mentions."""

    def __init__(self, s: Session, user_ids: Iterable[int | None], org_ids: Iterable[int | None]) -> None:
        users = {i for i in user_ids if i is not None}
        orgs = {i for i in org_ids if i is not None}
        self.users: dict[int, str] = {}
        self.orgs: dict[int, str] = {}
        if users:
            self.users = dict(s.execute(select(User.id, User.username).where(User.id.in_(users))).all())
        if orgs:
            found = s.execute(select(Organisation.id, Organisation.code).where(Organisation.id.in_(orgs)))
            self.orgs = dict(found.all())

    @classmethod
    def for_tasks(
        cls, s: Session, rows: Iterable[HumanTask], users: Iterable[int] = (), orgs: Iterable[int] = ()
    ) -> Names:
        """The names task rows mention, plus any other ``users`` and ``orgs`` the answer needs."""
        rows = list(rows)
        people = [r.assignee_id for r in rows] + [r.completed_by_id for r in rows] + list(users)
        return cls(s, people, [r.org_id for r in rows] + list(orgs))

    def user(self, user_id: int | None) -> str | None:
        return self.users.get(user_id) if user_id is not None else None

    def org(self, org_id: int) -> str:
        return self.orgs.get(org_id, str(org_id))


def holding(row: HumanTask) -> str:
    if row.assignee_id is None:
        return "candidate"
    return HOLDING.get(row.assignment or "", "owner")


def task(row: HumanTask, names: Names) -> dict[str, Any]:
    return {
        "id": row.id,
        "instance_id": row.instance_id,
        "process": row.process_key,
        "stage": row.stage,
        "title": row.title,
        "form": row.form,
        "lane": row.lane,
        "org": names.org(row.org_id),
        "assignee": names.user(row.assignee_id),
        "holding": holding(row),
        "priority": row.priority,
        "due_at": when(row.due_at),
        "created_at": when(row.created_at),
        "state": row.state,
        "completed_by": names.user(row.completed_by_id),
        "completed_at": when(row.completed_at),
    }


def instance(row: Instance, version: int, names: Names) -> dict[str, Any]:
    return {
        "id": row.id,
        "process": row.process_key,
        "version": version,
        "status": row.status,
        "stage": row.stage,
        "title": row.title,
        "org": names.org(row.org_id),
        "business_key": row.business_key,
        "started_by": names.user(row.started_by_id) or str(row.started_by_id),
        "started_at": when(row.started_at),
        "updated_at": when(row.updated_at),
        "ended_at": when(row.ended_at),
        "revision": row.revision,
    }


def incident(row: Incident) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "message": row.message, "created_at": when(row.created_at)}


def definition(row: Definition) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.process_key,
        "name": row.name,
        "version": row.version,
        "deployed_by": row.deployed_by,
        "deployed_at": when(row.deployed_at),
    }


def audit_event(row: AuditEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": when(row.at),
        "actor": row.actor,
        "action": row.action,
        "task_guid": row.task_guid,
        "payload": row.payload,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def verdict(found: Verdict) -> dict[str, Any]:
    return {
        "ok": found.ok,
        "checked": found.checked,
        "first_bad_seq": found.first_bad_seq,
        "reason": found.reason,
        "head_hash": found.head_hash,
    }


def trim(rows: Sequence[T], limit: int, key: Callable[[T], int]) -> tuple[Sequence[T], int | None]:
    """Rows read with ``limit + 1``: the page, and the key to continue after when there is more."""
    if len(rows) > limit:
        return rows[:limit], key(rows[limit - 1])
    return rows, None


def page(items: list[dict[str, Any]], next_key: int | None) -> dict[str, Any]:
    """A page of a keyset listing (schemas.page_of)."""
    return {"items": items, "next_cursor": str(next_key) if next_key is not None else None}
