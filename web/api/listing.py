"""The API's instance list: ``engine.queries.seen_by`` (the web list's rule) with the API's filters.

tests/test_api.py checks the organisations behind that rule against ``sees_org`` for every person
and organisation of the test directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from engine import queries
from engine.models import Instance, Organisation


def visible_orgs(s: Session, user_id: int) -> set[int]:
    """Every organisation in which or below which the user holds a role (what ``sees_org`` accepts)."""
    return set(s.execute(queries.visible_org_ids(user_id)).scalars())


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
    seen = queries.seen_by(user_id)
    query = select(Instance).options(defer(Instance.state)).where(seen)  # state: not for lists
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
