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

from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from engine import audit
from engine.errors import EngineError, NotFound
from engine.models import GroupMember, HumanTask, Instance, Membership, Organisation, User, utcnow

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


def read_key(key: str | None) -> tuple[int, str] | str | None:
    """What ``role_key`` or ``group_key`` wrote: (org id, role), a group name, or None (no pool)."""
    if not key:
        return None
    if key.startswith("org:"):
        _prefix, org_id, role = key.split(":", 2)
        return int(org_id), role
    return key.removeprefix("group:")


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


# --- administration: every change checked, then audited in the caller's transaction ----------------
#
# The admin pages and the ``qizhi`` command change the directory through these functions, so the rules
# (names, placement in the tree, not locking oneself out) and the audit events are the same whichever
# door a change comes through. Each takes the acting username and appends its event in the caller's
# transaction. The roll import (engine.roll) checks a whole roll with the same rules in a few queries
# and writes it in bulk, with events from the same builders (``*_event`` below).

# 公司党委 → 党总支 → 党支部 → 党小组, and which kinds may sit directly under each (None: the top).
ORG_KINDS: dict[str, str] = {
    "committee": "公司党委",
    "general_branch": "党总支",
    "branch": "党支部",
    "group": "党小组",
}
CHILD_KINDS: dict[str | None, tuple[str, ...]] = {
    None: ("committee",),
    "committee": ("general_branch", "branch"),
    "general_branch": ("branch",),
    "branch": ("group",),
    "group": (),
}
USERNAME = re.compile(r"[A-Za-z0-9._-]{3,64}")
ORG_CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
NAME_MAX = 200
GROUP_MAX = 64
NEEDS_NAME = "a person needs a display name of at most 200 characters"


class DirectoryRefused(EngineError):
    """A directory change that breaks a rule. ``reason`` is stable (the web shows it in the user's
    language); ``params`` fill the message; ``message`` is the English sentence for the CLI and logs."""

    code = "directory_refused"

    def __init__(self, reason: str, message: str, **params: Any) -> None:
        super().__init__(message, {"reason": reason, **params})
        self.reason = reason
        self.params = params


def username_problem(username: str) -> str | None:
    """Why a new username is unacceptable (a reason code), or None."""
    return None if USERNAME.fullmatch(username) else "bad_username"


def display_name_problem(name: str) -> str | None:
    if not name.strip():
        return "missing_display_name"
    return "too_long" if len(name) > NAME_MAX else None


def email_problem(email: str | None) -> str | None:
    if not email:
        return None
    return None if len(email) <= NAME_MAX and EMAIL.fullmatch(email) else "bad_email"


def group_problem(group: str) -> str | None:
    """Plain group names: a role key would be read as the role by lane resolution, never as the group."""
    if not group.strip() or group != group.strip() or len(group) > GROUP_MAX:
        return "bad_group"
    return "group_is_role" if group in ROLES else None


def placement_problem(parent_kind: str | None, kind: str) -> str | None:
    if kind not in ORG_KINDS:
        return "bad_kind"
    return None if kind in CHILD_KINDS.get(parent_kind, ()) else "bad_placement"


def _refuse_if(reason: str | None, message: str, **params: Any) -> None:
    if reason is not None:
        raise DirectoryRefused(reason, message, **params)


def _record(s: Session, actor: str, action: str, payload: dict[str, Any], org_id: int | None = None) -> None:
    audit.append(s, [audit.PendingEvent(actor=actor, action=action, payload=payload, org_id=org_id)])


def user_added_event(actor: str, user: User, **context: Any) -> audit.PendingEvent:
    payload = {"username": user.username, "display_name": user.display_name, "email": user.email}
    return audit.PendingEvent(actor=actor, action="user_added", payload=payload | context)


def user_updated_event(
    actor: str, user: User, changes: dict[str, list[str | None]], **context: Any
) -> audit.PendingEvent:
    payload = {"username": user.username, "changes": changes}
    return audit.PendingEvent(actor=actor, action="user_updated", payload=payload | context)


def role_granted_event(
    actor: str, user: User, org: Organisation, role: str, **context: Any
) -> audit.PendingEvent:
    payload = {"username": user.username, "org": org.code, "role": role}
    return audit.PendingEvent(actor=actor, action="role_granted", payload=payload | context, org_id=org.id)


def group_joined_event(actor: str, user: User, group: str, **context: Any) -> audit.PendingEvent:
    payload = {"username": user.username, "group": group}
    return audit.PendingEvent(actor=actor, action="group_joined", payload=payload | context)


def username_taken(s: Session, username: str) -> str | None:
    """The existing username equal to ``username`` ignoring case: 'Sec1' beside 'sec1' only confuses."""
    return s.execute(select(User.username).where(func.lower(User.username) == username.lower())).scalar()


def create_org(
    s: Session, actor: str, code: str, name: str, parent: Organisation | None, kind: str
) -> Organisation:
    """Add an organisation under ``parent`` (None: a top-level committee), where its kind fits."""
    name = name.strip()
    _refuse_if(None if ORG_CODE.fullmatch(code) else "bad_code", f"bad organisation code '{code}'", code=code)
    _refuse_if(
        display_name_problem(name), "an organisation needs a name of at most 200 characters", limit=NAME_MAX
    )
    if s.execute(select(Organisation.id).where(Organisation.code == code)).first():
        raise DirectoryRefused("org_exists", f"organisation '{code}' already exists", code=code)
    parent_kind = parent.kind if parent else None
    _refuse_if(
        placement_problem(parent_kind, kind),
        f"a {kind} cannot sit under {parent_kind or 'nothing'}"
        f" (allowed there: {', '.join(CHILD_KINDS.get(parent_kind, ())) or 'none'})",
        kind=kind,
        parent_kind=parent_kind or "",
    )
    org = add_org(s, code, name, parent.code if parent else None, kind)
    payload = {"code": code, "name": name, "kind": kind, "parent": parent.code if parent else None}
    _record(s, actor, "org_added", payload, org.id)
    return org


def rename_org(s: Session, actor: str, org: Organisation, name: str) -> None:
    name = name.strip()
    _refuse_if(
        display_name_problem(name), "an organisation needs a name of at most 200 characters", limit=NAME_MAX
    )
    if name == org.name:
        return
    payload = {"code": org.code, "old_name": org.name, "new_name": name}
    org.name = name
    s.flush()
    _record(s, actor, "org_renamed", payload, org.id)


def org_subtree(roots: Select[Any], name: str) -> Select[tuple[int]]:
    """Ids of the organisations in ``roots`` and every organisation below them, as one recursive query.

    ``name`` names the CTE, so two subtrees can appear in one statement.
    """
    tree = select(Organisation.id).where(Organisation.id.in_(roots)).cte(name, recursive=True)
    tree = tree.union(select(Organisation.id).where(Organisation.parent_id == tree.c.id))
    return select(tree.c.id)


def descendants(s: Session, org_id: int) -> set[int]:
    """The organisation and every organisation below it."""
    return set(s.execute(org_subtree(select(literal(org_id)), "below_org")).scalars())


def move_org(s: Session, actor: str, org: Organisation, parent: Organisation) -> int:
    """Put ``org`` (and all below it) under ``parent``, where its kind fits; returns tasks rerouted.

    Who oversees an organisation is read from the tree, so visibility follows at once; the open
    tasks below it that were offered to a role found upwards (the party office above, say) are
    resolved again from the new place, so they reach the people who now hold that role.
    """
    subtree = descendants(s, org.id)
    if parent.id in subtree:
        raise DirectoryRefused("move_cycle", "an organisation cannot move under itself or below it")
    _refuse_if(
        placement_problem(parent.kind, org.kind),
        f"a {org.kind} cannot sit under {parent.kind}",
        kind=org.kind,
        parent_kind=parent.kind,
    )
    if parent.id == org.parent_id:
        return 0
    old = s.get(Organisation, org.parent_id) if org.parent_id else None
    org.parent_id = parent.id
    s.flush()
    rerouted = _reroute_open_tasks(s, subtree)
    payload = {
        "code": org.code,
        "from": old.code if old else None,
        "to": parent.code,
        "rerouted_tasks": rerouted,
    }
    _record(s, actor, "org_moved", payload, org.id)
    return rerouted


def _reroute_open_tasks(s: Session, org_ids: set[int]) -> int:
    tasks = s.execute(
        select(HumanTask).where(
            HumanTask.org_id.in_(sorted(org_ids)), HumanTask.state == "open", HumanTask.lane.is_not(None)
        )
    ).scalars()
    moved = 0
    for task in tasks:
        key = candidate_key(s, task.lane, task.org_id)
        if key != task.candidate_key:
            task.candidate_key, moved = key, moved + 1
    s.flush()
    return moved


@dataclass(frozen=True)
class OrgUsage:
    """What still hangs on an organisation; any of it means the organisation cannot be removed."""

    children: int
    members: int
    instances: int

    @property
    def removable(self) -> bool:
        return not (self.children or self.members or self.instances)


def org_usage(s: Session, org_id: int) -> OrgUsage:
    def count(column: Any, where: Any) -> int:
        return s.execute(select(func.count(column)).where(where)).scalar_one()

    return OrgUsage(
        children=count(Organisation.id, Organisation.parent_id == org_id),
        members=count(func.distinct(Membership.user_id), Membership.org_id == org_id),
        instances=count(Instance.id, Instance.org_id == org_id),
    )


def remove_org(s: Session, actor: str, org: Organisation) -> None:
    """Remove an empty organisation: one with members, sub-organisations or process history stays."""
    usage = org_usage(s, org.id)
    if not usage.removable:
        raise DirectoryRefused(
            "org_in_use",
            f"organisation '{org.code}' still has {usage.children} sub-organisation(s),"
            f" {usage.members} member(s) and {usage.instances} process instance(s)",
            children=usage.children,
            members=usage.members,
            instances=usage.instances,
        )
    parent = s.get(Organisation, org.parent_id) if org.parent_id else None
    payload = {
        "code": org.code,
        "name": org.name,
        "kind": org.kind,
        "parent": parent.code if parent else None,
    }
    s.delete(org)
    s.flush()
    _record(s, actor, "org_removed", payload, org.id)


def create_user(
    s: Session,
    actor: str,
    username: str,
    display_name: str,
    email: str | None = None,
) -> User:
    """Add a person (no password yet: they sign in once an administrator sets one)."""
    display_name, email = display_name.strip(), (email or "").strip() or None
    _refuse_if(username_problem(username), f"bad username '{username}' (3-64 of A-Z a-z 0-9 . _ -)")
    _refuse_if(display_name_problem(display_name), NEEDS_NAME, limit=NAME_MAX)
    _refuse_if(email_problem(email), f"bad email address '{email}'", email=email)
    taken = username_taken(s, username)
    if taken:
        raise DirectoryRefused("username_taken", f"user '{taken}' already exists", username=taken)
    user = add_user(s, username, display_name, email)
    audit.append(s, [user_added_event(actor, user)])
    return user


def update_user(
    s: Session,
    actor: str,
    user: User,
    display_name: str | None = None,
    email: str | None = None,
) -> dict[str, list[str | None]]:
    """Change a person's display name and/or email (None: keep; "" email: clear). Returns what changed."""
    changes: dict[str, list[str | None]] = {}
    if display_name is not None:
        display_name = display_name.strip()
        _refuse_if(display_name_problem(display_name), NEEDS_NAME, limit=NAME_MAX)
        if display_name != user.display_name:
            changes["display_name"] = [user.display_name, display_name]
            user.display_name = display_name
    if email is not None:
        cleaned = email.strip() or None
        _refuse_if(email_problem(cleaned), f"bad email address '{cleaned}'", email=cleaned)
        if cleaned != user.email:
            changes["email"] = [user.email, cleaned]
            user.email = cleaned
    if changes:
        s.flush()
        audit.append(s, [user_updated_event(actor, user, changes)])
    return changes


def set_password_hash(s: Session, actor: str, user: User, password_hash: str) -> None:
    """Store a hash made by the web layer (the engine never sees a password); the event names no secret."""
    user.password_hash = password_hash
    s.flush()
    _record(s, actor, "password_set", {"username": user.username})


def deactivate_user(s: Session, actor: str, user: User) -> None:
    """A deactivated person cannot sign in and their open sessions end; their history stays.

    Tasks they took from a pool (claimed, or handed to them from one) go back to it, so the rest of
    the role can pick them up; tasks that are theirs by name (owner, initiator) stay, listed in the
    event for the party office to hand on.
    """
    if user.username == actor:
        raise DirectoryRefused("self_deactivate", "you cannot deactivate your own account")
    if not user.active:
        return
    user.active = False
    held = list(
        s.execute(
            select(HumanTask)
            .where(HumanTask.assignee_id == user.id, HumanTask.state == "open")
            .order_by(HumanTask.id)
            .with_for_update()
        ).scalars()
    )
    pooled = [t for t in held if t.candidate_key is not None]
    for task in pooled:
        task.assignee_id, task.assignment = None, None
    s.flush()
    payload: dict[str, Any] = {"username": user.username}
    if named := [t.id for t in held if t.candidate_key is None]:
        payload["still_assigned"] = named
    events = [audit.PendingEvent(actor=actor, action="user_deactivated", payload=payload)]
    events += [
        audit.PendingEvent(
            actor=actor,
            action="task.released",
            payload={"task": t.id, "title": t.title, "from": user.username, "reason": "deactivated"},
            instance_id=t.instance_id,
            task_guid=t.task_guid,
            org_id=t.org_id,
        )
        for t in pooled
    ]
    audit.append(s, events)


def reactivate_user(s: Session, actor: str, user: User) -> None:
    if not user.active:
        user.active = True
        s.flush()
        _record(s, actor, "user_reactivated", {"username": user.username})


def is_locked(user: User, now: datetime | None = None) -> bool:
    return user.locked_until is not None and user.locked_until > (now or utcnow())


def unlock_user(s: Session, actor: str, user: User) -> None:
    """Clear a sign-in lock-out (and the failure count that leads to the next one)."""
    if not (is_locked(user) or user.failed_logins):
        return
    payload = {
        "username": user.username,
        "failed_logins": user.failed_logins,
        "locked_until": user.locked_until.isoformat() if user.locked_until else None,
    }
    user.locked_until = None
    user.failed_logins = 0
    s.flush()
    _record(s, actor, "user_unlocked", payload)


def grant_role(
    s: Session,
    actor: str,
    user: User,
    org: Organisation,
    role: str,
) -> Membership:
    if role not in ROLES:
        raise DirectoryRefused("bad_role", f"no role '{role}'; known roles: {', '.join(ROLES)}", role=role)
    held = s.execute(
        select(Membership.id).where(
            Membership.user_id == user.id, Membership.org_id == org.id, Membership.role == role
        )
    ).first()
    if held:
        raise DirectoryRefused(
            "role_held", f"{user.username} already is {role} in {org.code}", role=role, org=org.code
        )
    member = Membership(user_id=user.id, org_id=org.id, role=role)
    s.add(member)
    s.flush()
    audit.append(s, [role_granted_event(actor, user, org, role)])
    return member


def revoke_role(s: Session, actor: str, membership: Membership) -> None:
    """Take a role away; an administrator cannot take away their own last admin role (no way back in)."""
    user = s.get(User, membership.user_id)
    org = s.get(Organisation, membership.org_id)
    assert user is not None and org is not None
    if membership.role == "admin" and user.username == actor:
        others = s.execute(
            select(func.count(Membership.id)).where(
                Membership.user_id == user.id, Membership.role == "admin", Membership.id != membership.id
            )
        ).scalar_one()
        if not others:
            raise DirectoryRefused("self_revoke_admin", "you cannot take away your own last admin role")
    s.delete(membership)
    s.flush()
    _record(
        s,
        actor,
        "role_revoked",
        {"username": user.username, "org": org.code, "role": membership.role},
        org.id,
    )


def join_plain_group(
    s: Session,
    actor: str,
    user: User,
    group: str,
) -> GroupMember:
    _refuse_if(group_problem(group), f"bad group name '{group}'", group=group)
    held = s.execute(
        select(GroupMember.id).where(GroupMember.user_id == user.id, GroupMember.group_name == group)
    ).first()
    if held:
        raise DirectoryRefused("group_held", f"{user.username} already is in group {group}", group=group)
    row = GroupMember(user_id=user.id, group_name=group)
    s.add(row)
    s.flush()
    audit.append(s, [group_joined_event(actor, user, group)])
    return row


def leave_plain_group(s: Session, actor: str, user: User, group: str) -> None:
    row = s.execute(
        select(GroupMember).where(GroupMember.user_id == user.id, GroupMember.group_name == group)
    ).scalar_one_or_none()
    if row is None:
        raise DirectoryRefused("group_missing", f"{user.username} is not in group {group}", group=group)
    s.delete(row)
    s.flush()
    _record(s, actor, "group_left", {"username": user.username, "group": group})


@dataclass
class OrgNode:
    """One organisation of the tree with its direct members, and everyone in it and below it."""

    id: int
    code: str
    name: str
    kind: str
    parent_id: int | None
    members: int = 0
    total_members: int = 0
    children: list[OrgNode] = field(default_factory=list)


def org_tree(s: Session) -> list[OrgNode]:
    """The whole organisation tree, roots first, siblings by code: two queries whatever its size."""
    nodes = {
        o.id: OrgNode(o.id, o.code, o.name, o.kind, o.parent_id)
        for o in s.execute(select(Organisation).order_by(Organisation.code)).scalars()
    }
    people: dict[int, set[int]] = {}
    for org_id, user_id in s.execute(select(Membership.org_id, Membership.user_id).distinct()):
        people.setdefault(org_id, set()).add(user_id)
    roots: list[OrgNode] = []
    for node in nodes.values():
        node.members = len(people.get(node.id, ()))
        parent = nodes.get(node.parent_id) if node.parent_id is not None else None
        (parent.children if parent else roots).append(node)

    def total(node: OrgNode, seen: frozenset[int]) -> set[int]:
        everyone = set(people.get(node.id, ()))
        for child in node.children:
            if child.id not in seen:  # a cycle in hand-edited data must not recurse forever
                everyone |= total(child, seen | {child.id})
        node.total_members = len(everyone)
        return everyone

    for root in roots:
        total(root, frozenset({root.id}))
    return roots
