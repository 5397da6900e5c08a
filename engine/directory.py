"""Organisations, people and roles, and how a lane becomes the people who may act on a task.

A role is always held *in* an organisation. A lane named by a role key resolves from the
instance's organisation upwards to the nearest organisation where someone holds that role: the
branch secretary *of this branch*, the party committee *above it*. Any other lane name is a plain
group. The resolution is written into ``human_task.candidate_key`` so the inbox is one indexed look-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import audit
from engine.errors import EngineError, NotFound
from engine.models import GroupMember, Instance, Membership, Organisation, User, utcnow

ROLES: dict[str, str] = {
    "party_committee": "公司党委",
    "party_office": "党建工作部",
    "review_committee": "党建项目评审委员会",
    "branch_secretary": "支部书记",
    "party_member": "党员",
    "masses": "群众代表",
    "auditor": "纪检/审计",
    "designer": "流程设计",
    "admin": "系统管理员",
}


def role_key(org_id: int, role: str) -> str:
    return f"org:{org_id}:{role}"


def group_key(name: str) -> str:
    return f"group:{name}"


def ancestors(session: Session, org_id: int) -> list[int]:
    """The organisation and every organisation above it, nearest first."""
    chain: list[int] = []
    current: int | None = org_id
    while current is not None and current not in chain:
        chain.append(current)
        current = session.execute(select(Organisation.parent_id).where(Organisation.id == current)).scalar()
    return chain


def candidate_key(session: Session, lane: str | None, org_id: int) -> str | None:
    """Who may claim a task of this lane in this organisation (None: nobody but its assignee)."""
    if not lane:
        return None
    if lane not in ROLES:
        return group_key(lane)
    chain = ancestors(session, org_id)
    holders = set(
        session.execute(
            select(Membership.org_id).where(Membership.role == lane, Membership.org_id.in_(chain))
        ).scalars()
    )
    for org in chain:
        if org in holders:
            return role_key(org, lane)
    return role_key(org_id, lane)


def user_keys(session: Session, user_id: int) -> list[str]:
    """Every candidate key a user answers to: their roles in organisations and their groups."""
    roles = session.execute(select(Membership.org_id, Membership.role).where(Membership.user_id == user_id))
    groups = session.execute(select(GroupMember.group_name).where(GroupMember.user_id == user_id)).scalars()
    return [role_key(org, role) for org, role in roles] + [group_key(g) for g in groups]


def holders(session: Session, org_code: str, role: str) -> list[tuple[str, str]]:
    """(username, display name) of the active people holding a role in one organisation."""
    org = org_by_code(session, org_code)
    rows = session.execute(
        select(User.username, User.display_name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org.id, Membership.role == role, User.active)
        .order_by(User.username)
    )
    return [(u, d) for u, d in rows]


def active_user_id(session: Session, username: str) -> int | None:
    """The id of an active user, or None: for names that come from process data, not from a login."""
    return session.execute(select(User.id).where(User.username == username, User.active)).scalar()


def user_by_name(session: Session, username: str) -> User:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None or not user.active:
        raise NotFound(f"no active user '{username}'")
    return user


def org_by_code(session: Session, code: str) -> Organisation:
    org = session.execute(select(Organisation).where(Organisation.code == code)).scalar_one_or_none()
    if org is None:
        raise NotFound(f"no organisation '{code}'")
    return org


def add_org(
    session: Session, code: str, name: str, parent: str | None = None, kind: str = "branch"
) -> Organisation:
    parent_id = org_by_code(session, parent).id if parent else None
    org = Organisation(code=code, name=name, parent_id=parent_id, kind=kind)
    session.add(org)
    session.flush()
    return org


def add_user(
    session: Session, username: str, display_name: str | None = None, email: str | None = None
) -> User:
    user = User(username=username, display_name=display_name or username, email=email)
    session.add(user)
    session.flush()
    return user


def grant(session: Session, username: str, org_code: str, role: str) -> Membership:
    if role not in ROLES:
        raise NotFound(f"no role '{role}'; known roles: {', '.join(ROLES)}")
    member = Membership(
        user_id=user_by_name(session, username).id, org_id=org_by_code(session, org_code).id, role=role
    )
    session.add(member)
    session.flush()
    return member


def join_group(session: Session, username: str, group: str) -> GroupMember:
    row = GroupMember(user_id=user_by_name(session, username).id, group_name=group)
    session.add(row)
    session.flush()
    return row


def _holds(session: Session, user_id: int, roles: tuple[str, ...] | None, org_id: int | None) -> bool:
    """Whether the user holds one of ``roles`` (any role: None) in ``org_id`` or above it (anywhere: None)."""
    query = select(Membership.id).where(Membership.user_id == user_id)
    if roles is not None:
        query = query.where(Membership.role.in_(roles))
    if org_id is not None:
        query = query.where(Membership.org_id.in_(ancestors(session, org_id)))
    return session.execute(query.limit(1)).first() is not None


def holds_role_anywhere(session: Session, user_id: int, roles: tuple[str, ...]) -> bool:
    return _holds(session, user_id, roles, None)


def holds_role_above(session: Session, user_id: int, org_id: int, roles: tuple[str, ...]) -> bool:
    """Whether the user holds one of the roles in the organisation or one above it."""
    return _holds(session, user_id, roles, org_id)


def sees_org(session: Session, user_id: int, org_id: int) -> bool:
    """A user sees an organisation's instances if they hold any role in it or in an organisation above it."""
    return _holds(session, user_id, None, org_id)
