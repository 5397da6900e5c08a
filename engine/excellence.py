"""评选优秀党建项目: once a year the party committee picks excellent projects from the accepted ones.

A project is *accepted* when its lifecycle instance closed with outcome 结项 — it passed 考评验收
and its 总结推广 record (outcomes, brand, the office's recommendation) is registered. The pick is
capped (at most half of the year's accepted projects by default) and checked here, on the server,
whatever a page sent. The chosen projects are marked on their promotion record — the instance's
data, where 总结推广 keeps it — as ``excellent_year`` / ``excellent_selected_by`` /
``excellent_selected_at``, with one audit event per project, in one transaction.

Why not a process: the lifecycle instances are already completed, so no task of theirs can carry
the mark, and a separate yearly process would only wrap this one decision in a single form. The
selection is still recorded the engine's way: revision bumped, hash-chained audit event, locked rows.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit, directory
from engine.errors import Forbidden, InvalidState, NotFound, ValidationFailed
from engine.figures import LIFECYCLE, OrgTree, year_bounds
from engine.models import Instance, Membership, Organisation

DEFAULT_RATIO = 0.5  # at most half of the accepted projects
SELECTING_ROLE = "party_committee"
ACCEPTED_OUTCOME = "结项"
ALREADY_SELECTED = "already_selected"  # InvalidState.details["reason"]: the year's pick is made
NONE_ACCEPTED = "none_accepted"


@dataclass
class Candidate:
    instance_id: int
    title: str
    org_code: str
    org_name: str
    acceptance_grade: str | None
    acceptance_score: float | None
    brand_name: str | None
    recommended: bool
    ended_at: datetime | None
    excellent_year: int | None

    @property
    def selected(self) -> bool:
        return self.excellent_year is not None


def cap(accepted: int, ratio: float = DEFAULT_RATIO) -> int:
    """How many may be chosen: ``ratio`` of the accepted ones, rounded down (2 of 5 at one half)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"the selection ratio must be above 0 and at most 1, not {ratio}")
    return math.floor(accepted * ratio + 1e-9)


def committee_scope(s: Session, user_id: int) -> set[int]:
    """The organisations at or below one where the user sits on the party committee."""
    tree = OrgTree.load(s)
    held = s.execute(
        select(Membership.org_id).where(Membership.user_id == user_id, Membership.role == SELECTING_ROLE)
    ).scalars()
    ids: set[int] = set()
    for org in held:
        ids |= tree.subtree(org)
    return ids


def candidates(s: Session, year: int, within: Collection[int] | None, lock: bool = False) -> list[Candidate]:
    """The projects accepted (closed with 结项) during the Beijing year, in the given organisations."""
    start, end = year_bounds(year)
    query = (
        select(
            Instance.id,
            Instance.title,
            Instance.data,
            Instance.ended_at,
            Organisation.code,
            Organisation.name,
        )
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(
            Instance.process_key == LIFECYCLE,
            Instance.status == "completed",
            Instance.ended_at >= start,
            Instance.ended_at < end,
        )
        .order_by(Instance.id)
    )
    if within is not None:
        query = query.where(Instance.org_id.in_(sorted(within)))
    if lock:  # the rows a selection marks: a second committee member's pick waits for the first
        query = query.with_for_update(of=Instance)
    out = []
    for r in s.execute(query):
        data = r.data or {}
        if data.get("outcome") != ACCEPTED_OUTCOME:
            continue
        out.append(
            Candidate(
                instance_id=r.id,
                title=r.title or "",
                org_code=r.code,
                org_name=r.name,
                acceptance_grade=data.get("acceptance_grade"),
                acceptance_score=data.get("acceptance_score"),
                brand_name=data.get("brand_name"),
                recommended=bool(data.get("recommended_excellent")),
                ended_at=r.ended_at,
                excellent_year=data.get("excellent_year"),
            )
        )
    return out


def select_excellent(
    s: Session,
    year: int,
    actor: str,
    chosen: Sequence[int],
    now: datetime,
    ratio: float = DEFAULT_RATIO,
) -> list[int]:
    """Mark ``chosen`` as the year's excellent projects, within the cap; all or nothing.

    Raises Forbidden (not on a party committee), InvalidState (nothing accepted, or the year's
    selection is already made), NotFound (an id that is not an accepted project the actor oversees)
    and ValidationFailed (none chosen, or more than the cap).
    """
    user = directory.user_by_name(s, actor)
    scope = committee_scope(s, user.id)
    if not scope:
        raise Forbidden(f"{actor} sits on no party committee, so may not select excellent projects")
    pool = {c.instance_id: c for c in candidates(s, year, scope, lock=True)}
    if not pool:
        raise InvalidState(
            f"no project was accepted in {year} in the organisations {actor} oversees",
            {"reason": NONE_ACCEPTED},
        )
    done = sorted(c.instance_id for c in pool.values() if c.excellent_year == year)
    if done:
        raise InvalidState(
            f"the excellent projects of {year} are already selected: {done}", {"reason": ALREADY_SELECTED}
        )
    try:
        picked = list(dict.fromkeys(int(i) for i in chosen))
    except (TypeError, ValueError) as err:
        raise ValidationFailed({"selected": ["project ids are whole numbers"]}) from err
    limit = cap(len(pool), ratio)
    if not picked:
        raise ValidationFailed({"selected": ["choose at least one project"]})
    unknown = [i for i in picked if i not in pool]
    if unknown:
        raise NotFound(f"not accepted projects of {year} that {actor} oversees: {unknown}")
    if len(picked) > limit:
        raise ValidationFailed(
            {"selected": [f"at most {limit} of the {len(pool)} accepted projects may be chosen"]}
        )
    rows = {i.id: i for i in s.execute(select(Instance).where(Instance.id.in_(picked))).scalars()}
    events = []
    for instance_id in picked:
        inst = rows[instance_id]
        mark = {
            "excellent_year": year,
            "excellent_selected_by": actor,
            "excellent_selected_at": now.isoformat(),
        }
        inst.data = {**(inst.data or {}), **mark}
        inst.updated_at = now
        events.append(
            audit.PendingEvent(
                actor=actor,
                action="project.selected_excellent",
                payload={
                    "year": year,
                    "title": inst.title,
                    "accepted": len(pool),
                    "cap": limit,
                    "ratio": ratio,
                    "chosen": picked,
                },
                instance_id=inst.id,
                definition_id=inst.definition_id,
                org_id=inst.org_id,
            )
        )
    s.flush()
    audit.append(s, events, now)
    return picked
