"""Yearly figures that leaders assess party-building by (政工一体化考核), as queries a dashboard can use.

Grassroots organisations must each year run at least one party-building project and solve at
least two new problems (每年至少实施1个党建项目,至少研究解决2个基层党建新问题). Every grassroots
organisation is listed, so those with nothing at all show up as falling short too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.figures import DrillRow, OrgTree, org_names
from engine.models import Instance, Organisation

LIFECYCLE = "project_lifecycle"
GRASSROOTS = ("general_branch", "branch")
MIN_PROJECTS = 1
MIN_PROBLEMS = 2


@dataclass
class Compliance:
    code: str
    name: str
    projects: int = 0
    problems_solved: int = 0
    titles: list[str] = field(default_factory=list)

    @property
    def shortfalls(self) -> list[str]:
        out = []
        if self.projects < MIN_PROJECTS:
            out.append(f"党建项目 {self.projects} 个，少于 {MIN_PROJECTS} 个")
        if self.problems_solved < MIN_PROBLEMS:
            out.append(f"解决新问题 {self.problems_solved} 个，少于 {MIN_PROBLEMS} 个")
        return out

    @property
    def compliant(self) -> bool:
        return not self.shortfalls


def counts_toward_compliance(data: dict[str, Any], year: int) -> tuple[int, int] | None:
    """(projects, problems solved) one lifecycle instance adds to its organisation's year, or None.

    A project counts in the year its period starts once it is approved (立项); the problems its
    summary lists as solved count with it. One rule for the figure and for its drill-down.
    """
    starts = str(data.get("period_start", ""))
    if data.get("initiation_decision") != "立项" or not starts.startswith(str(year)):
        return None
    return 1, len(data.get("problems_solved") or [])


def yearly_compliance(
    s: Session, year: int, process_key: str = LIFECYCLE, within: Collection[int] | None = None
) -> dict[str, Compliance]:
    """Per grassroots organisation (by code): approved projects whose period starts in ``year``, and the
    problems their summaries list as solved. ``within`` limits it to those organisations (a scope)."""
    orgs = select(Organisation.code, Organisation.name).where(Organisation.kind.in_(GRASSROOTS))
    if within is not None:
        orgs = orgs.where(Organisation.id.in_(sorted(within)))
    report = {code: Compliance(code, name) for code, name in s.execute(orgs.order_by(Organisation.code))}
    query = (
        select(Organisation.code, Organisation.name, Instance.data, Instance.title)
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(Instance.process_key == process_key)
        .order_by(Instance.id)
    )
    if within is not None:
        query = query.where(Instance.org_id.in_(sorted(within)))
    for code, name, data, title in s.execute(query):
        counted = counts_toward_compliance(data or {}, year)
        if counted is None:
            continue
        row = report.setdefault(code, Compliance(code, name))
        row.projects += counted[0]
        row.problems_solved += counted[1]
        row.titles.append(title or "")
    return report


def compliance_behind(s: Session, year: int, org_id: int, process_key: str = LIFECYCLE) -> list[DrillRow]:
    """The projects one organisation's compliance figure counts, with the problems each solved."""
    code, name = org_names(s, [org_id]).get(org_id, (str(org_id), str(org_id)))
    rows = s.execute(
        select(Instance.id, Instance.title, Instance.stage, Instance.status, Instance.data)
        .where(Instance.process_key == process_key, Instance.org_id == org_id)
        .order_by(Instance.id)
    )
    out = []
    for r in rows:
        data = r.data or {}
        if counts_toward_compliance(data, year) is None:
            continue
        solved = "；".join(str(p) for p in data.get("problems_solved") or [])
        out.append(DrillRow(r.id, r.title or "", code, name, r.stage, r.status, detail=solved))
    return out


# --- pledge cycle figures (承诺践诺) -----------------------------------------------------------------

PLEDGE = "pledge_cycle"
PLEDGE_GRADES = ("好", "中", "差")  # the bands of workflows/pledge_evaluation.dmn, in display order
KEPT_ON_TIME = "按期兑现"
PLEDGE_MEASURES = ("cycles", "made", "approved", "kept_on_time", "late_reports")


@dataclass
class PledgeFigures:
    """One branch's pledge year: cycles, pledges made / approved / kept on time, late reports, grades."""

    code: str
    name: str
    cycles: int = 0
    made: int = 0
    approved: int = 0
    kept_on_time: int = 0
    late_reports: int = 0
    grades: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "made": self.made,
            "approved": self.approved,
            "kept_on_time": self.kept_on_time,
            "late_reports": self.late_reports,
            "grades": Counter(self.grades),
        }


def pledge_counts(data: dict[str, Any]) -> dict[str, int]:
    """What one cycle adds to its branch's figures, read from the summary the engine keeps.

    Pledges made: those in the latest submitted 承诺书; approved: those of a cycle whose review
    verdict is approve; kept on time: year-end results marked 按期兑现; late reports: quarterly
    reports that came after a reminder.
    """
    made = len(data.get("pledges") or [])
    return {
        "cycles": 1,
        "made": made,
        "approved": made if data.get("review_verdict") == "approve" else 0,
        "kept_on_time": sum(1 for r in data.get("results") or [] if r.get("outcome") == KEPT_ON_TIME),
        "late_reports": sum(1 for r in data.get("reports") or [] if r.get("late")),
    }


def _pledge_rows(s: Session, year: int, ids: Collection[int] | None) -> list[Any]:
    query = (
        select(
            Instance.id,
            Instance.org_id,
            Organisation.code,
            Organisation.name,
            Instance.title,
            Instance.stage,
            Instance.status,
            Instance.data,
        )
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(Instance.process_key == PLEDGE, Instance.status != "terminated")
        .order_by(Instance.id)
    )
    if ids is not None:
        query = query.where(Instance.org_id.in_(sorted(ids)))
    return [r for r in s.execute(query) if (r.data or {}).get("year") == year]


def _org_ids(s: Session, org: str | int | None, within: Collection[int] | None) -> set[int] | None:
    """The organisations to count: ``org`` and those below it, intersected with ``within``."""
    if org is None:
        return None if within is None else set(within)
    tree = OrgTree.load(s)
    node = tree.nodes.get(org) if isinstance(org, int) else tree.by_code(org)
    if node is None:
        raise NotFound(f"no organisation '{org}'")
    ids = tree.subtree(node.id)
    return ids if within is None else ids & set(within)


def pledge_year_figures(
    s: Session, year: int, org: str | int | None = None, within: Collection[int] | None = None
) -> dict[str, PledgeFigures]:
    """Per branch (org code): the year's pledge figures. Every grassroots organisation is listed.

    ``org`` (a code or id) limits it to that organisation and those below; ``within`` to a scope.
    """
    ids = _org_ids(s, org, within)
    orgs = select(Organisation.id, Organisation.code, Organisation.name).where(
        Organisation.kind.in_(GRASSROOTS)
    )
    if ids is not None:
        orgs = orgs.where(Organisation.id.in_(sorted(ids)))
    out = {code: PledgeFigures(code, name) for _, code, name in s.execute(orgs.order_by(Organisation.code))}
    for r in _pledge_rows(s, year, ids):
        row = out.setdefault(r.code, PledgeFigures(r.code, r.name))
        for key, n in pledge_counts(r.data).items():
            setattr(row, key, getattr(row, key) + n)
        if r.data.get("grade"):
            row.grades[r.data["grade"]] += 1
    return out


def pledge_grade_columns(rows: Iterable[PledgeFigures]) -> list[str]:
    seen = {g for r in rows for g in r.grades}
    return [*PLEDGE_GRADES, *sorted(seen - set(PLEDGE_GRADES))]


def pledges_behind(s: Session, year: int, org_id: int, measure: str) -> list[DrillRow]:
    """The cycles behind one pledge figure: ``measure`` is one of PLEDGE_MEASURES or ``grade:<等次>``."""
    grade = measure.removeprefix("grade:") if measure.startswith("grade:") else None
    if grade is None and measure not in PLEDGE_MEASURES:
        raise NotFound(f"no pledge figure '{measure}'")
    out = []
    for r in _pledge_rows(s, year, [org_id]):
        counts = pledge_counts(r.data)
        hit = r.data.get("grade") == grade if grade is not None else counts[measure] > 0
        if hit:
            detail = f"{counts[measure]}" if grade is None else f"{r.data.get('score', '')}"
            out.append(DrillRow(r.id, r.title or "", r.code, r.name, r.stage, r.status, detail=detail))
    return out
