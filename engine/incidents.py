"""Incidents as the party office sees them: which ones a person may handle, and resolving one.

An incident is handled by the party office or an administrator of the instance's organisation or
one above it (``runtime.INCIDENT_ROLES``), the same rule ``Engine.retry_incident`` enforces. Retry
runs the failed step again; *resolve* closes the incident without running anything, with a comment
saying why (a notice that cannot be delivered, a job made pointless by later events). An incident
that stops its instance cannot be resolved that way: the instance would stay stopped with nothing
left to retry, so it must be retried (with corrected data if needed).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit, directory
from engine.errors import Forbidden, InvalidState, NotFound, ValidationFailed
from engine.models import Incident, Instance, Job, Membership, Organisation
from engine.runtime import INCIDENT_ROLES, Engine

MAX_COMMENT = 500


@dataclass
class IncidentView:
    """An incident with what the list and the detail page show beside it."""

    incident: Incident
    instance: Instance | None
    org: Organisation | None
    job: Job | None

    @property
    def stops_instance(self) -> bool:
        """Whether the instance waits on this incident (a failed step), not only on one job."""
        return self.incident.kind != "job" and self.instance is not None and self.instance.status == "failed"


def handled_orgs(s: Session, user_id: int) -> set[int]:
    """Organisations whose incidents the user may handle: where they hold an incident role, and below."""
    roots = set(
        s.execute(
            select(Membership.org_id).where(
                Membership.user_id == user_id, Membership.role.in_(INCIDENT_ROLES)
            )
        ).scalars()
    )
    if not roots:
        return set()
    children: dict[int | None, list[int]] = {}
    for org_id, parent_id in s.execute(select(Organisation.id, Organisation.parent_id)):
        children.setdefault(parent_id, []).append(org_id)
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        org_id = todo.pop()
        if org_id not in seen:
            seen.add(org_id)
            todo.extend(children.get(org_id, []))
    return seen


def list_incidents(
    s: Session, user_id: int, state: str = "open", before: int | None = None, limit: int = 50
) -> list[IncidentView]:
    """The incidents the user may handle, newest first, ``limit`` at a time (keyset on id)."""
    orgs = handled_orgs(s, user_id)
    if not orgs:
        return []
    query = (
        select(Incident, Instance, Organisation, Job)
        .join(Instance, Instance.id == Incident.instance_id)
        .join(Organisation, Organisation.id == Instance.org_id)
        .outerjoin(Job, Job.id == Incident.job_id)
        .where(Instance.org_id.in_(orgs), Incident.state == state)
        .order_by(Incident.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(Incident.id < before)
    return [IncidentView(*row) for row in s.execute(query)]


def incident_view(s: Session, user_id: int, incident_id: int) -> IncidentView:
    """One incident, if the user may handle it; NotFound otherwise (others must not learn it exists)."""
    incident = s.get(Incident, incident_id)
    instance = s.get(Instance, incident.instance_id) if incident and incident.instance_id else None
    if incident is None or instance is None:
        raise NotFound(f"no incident {incident_id}")
    if not directory.holds_role_above(s, user_id, instance.org_id, INCIDENT_ROLES):
        raise NotFound(f"no incident {incident_id}")
    job = s.get(Job, incident.job_id) if incident.job_id else None
    return IncidentView(incident, instance, s.get(Organisation, instance.org_id), job)


def resolve(engine: Engine, incident_id: int, actor: str, comment: str) -> Incident:
    """Close an incident without running anything again; audited as ``incident.resolved``."""
    comment = comment.strip()
    if not comment or len(comment) > MAX_COMMENT:
        raise ValidationFailed({"comment": [f"say in 1 to {MAX_COMMENT} characters why no retry is needed"]})
    now = engine.clock()
    with engine.db.write() as s:
        incident = s.get(Incident, incident_id, with_for_update=True)
        instance = s.get(Instance, incident.instance_id) if incident and incident.instance_id else None
        if incident is None or instance is None:
            raise NotFound(f"no incident {incident_id}")
        user = directory.user_by_name(s, actor)
        if not directory.holds_role_above(s, user.id, instance.org_id, INCIDENT_ROLES):
            raise Forbidden(f"{actor} may not resolve incidents of this organisation")
        if incident.state != "open":
            raise InvalidState(f"incident {incident_id} is already {incident.state}")
        view = IncidentView(incident, instance, None, None)
        if view.stops_instance:
            raise InvalidState(f"incident {incident_id} stops instance {instance.id}: retry it instead")
        incident.state, incident.resolved_at = "resolved", now
        audit.append(
            s,
            [
                audit.PendingEvent(
                    actor=user.username,
                    action="incident.resolved",
                    instance_id=instance.id,
                    definition_id=instance.definition_id,
                    org_id=instance.org_id,
                    payload={
                        "incident": incident.id,
                        "kind": incident.kind,
                        "job": incident.job_id,
                        "comment": comment,
                    },
                )
            ],
            now,
        )
        return incident
