"""Which instances a person may list: the rule of ``engine.queries.can_see_instance``, as one query.

``can_see_instance`` answers for one instance: started it, holds a role in its organisation or
above (``directory.sees_org``), or was ever assigned one of its tasks. A listing cannot ask that
row by row without reading every instance in the database, so the same three conditions are put
into SQL here: the organisations a person sees are those below any organisation they hold a role
in (the organisation tree is small, read once per request). tests/test_api.py checks this against
``sees_org`` for every person and organisation of the test directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, defer

from engine.models import HumanTask, Instance, Membership, Organisation


def visible_orgs(s: Session, user_id: int) -> set[int]:
    """Every organisation in which or above which the user holds a role (what ``sees_org`` accepts)."""
    held = set(s.execute(select(Membership.org_id).where(Membership.user_id == user_id)).scalars())
    if not held:
        return set()
    children: dict[int | None, list[int]] = {}
    for org_id, parent_id in s.execute(select(Organisation.id, Organisation.parent_id)):
        children.setdefault(parent_id, []).append(org_id)
    seen: set[int] = set()
    todo = list(held)
    while todo:
        org_id = todo.pop()
        if org_id in seen:
            continue
        seen.add(org_id)
        todo.extend(children.get(org_id, ()))
    return seen


@dataclass
class InstanceFilter:
    process: str | None = None
    status: str | None = None
    stage: str | None = None
    org: str | None = None  # organisation code
    business_key: str | None = None
    before_id: int | None = None  # keyset paging, newest first
    limit: int = 50


def visible_instances(s: Session, user_id: int, f: InstanceFilter) -> list[Instance]:
    """Instances the user may see, newest first, at most ``f.limit``."""
    orgs = visible_orgs(s, user_id)
    assigned = select(HumanTask.instance_id).where(HumanTask.assignee_id == user_id)
    who = [Instance.started_by_id == user_id, Instance.id.in_(assigned)]
    if orgs:
        who.append(Instance.org_id.in_(orgs))
    query = select(Instance).options(defer(Instance.state)).where(or_(*who))  # state: not for lists
    if f.process:
        query = query.where(Instance.process_key == f.process)
    if f.status:
        query = query.where(Instance.status == f.status)
    if f.stage:
        query = query.where(Instance.stage == f.stage)
    if f.business_key:
        query = query.where(Instance.business_key == f.business_key)
    if f.org:
        query = query.where(
            Instance.org_id == select(Organisation.id).where(Organisation.code == f.org).scalar_subquery()
        )
    if f.before_id:
        query = query.where(Instance.id < f.before_id)
    return list(s.execute(query.order_by(Instance.id.desc()).limit(f.limit)).scalars())
