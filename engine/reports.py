"""Yearly figures that leaders assess party-building by (政工一体化考核), as queries a dashboard can use.

Grassroots organisations must each year run at least one party-building project and solve at
least two new problems (每年至少实施1个党建项目,至少研究解决2个基层党建新问题). Every grassroots
organisation is listed, so those with nothing at all show up as falling short too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import facts
from engine.errors import NotFound
from engine.facts import GRADE_PREFIX, PLEDGE
from engine.figures import LIFECYCLE, DrillRow, OrgTree, org_names
from engine.models import Instance, InstanceFact, Organisation

GRASSROOTS = ("general_branch", "branch")
Row = TypeVar("Row")
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


def yearly_compliance(
    s: Session, year: int, process_key: str = LIFECYCLE, within: Collection[int] | None = None
) -> dict[str, Compliance]:
    """Per grassroots organisation (by code): approved projects whose period starts in ``year``, and the
    problems their summaries list as solved (engine.facts). ``within`` limits it to those organisations."""
    report, counted, names = _per_organisation(s, process_key, year, within, Compliance)
    for row, counts in counted:
        row.projects, row.problems_solved = counts.get("projects", 0), counts.get("problems_solved", 0)
    titles = (
        select(InstanceFact.org_id, Instance.title)
        .join(Instance, Instance.id == InstanceFact.instance_id)
        .where(
            InstanceFact.process_key == process_key,
            InstanceFact.year == year,
            InstanceFact.measure == "projects",
        )
        .order_by(Instance.id)
    )
    if within is not None:
        titles = titles.where(InstanceFact.org_id.in_(sorted(within)))
    for org_id, title in s.execute(titles):
        report[names.of[org_id][0]].titles.append(title or "")
    return report


def _per_organisation(
    s: Session, process_key: str, year: int, within: Collection[int] | None, make: Callable[[str, str], Row]
) -> tuple[dict[str, Row], list[tuple[Row, dict[str, int]]], _Names]:
    """A row per grassroots organisation (by code), and each counted organisation's row with its sums."""
    totals = facts.sums(s, process_key, year, within)
    names = _names(s, within, totals)
    rows = {code: make(code, name) for code, name in names.listed}
    counted = []
    for org_id, counts in totals.items():
        code, name = names.of[org_id]
        counted.append((rows.setdefault(code, make(code, name)), counts))
    return rows, counted, names


@dataclass
class _Names:
    listed: list[tuple[str, str]]  # every grassroots organisation in scope, by code
    of: dict[int, tuple[str, str]]  # code and name by id, for those and any other organisation counted


def _names(s: Session, within: Collection[int] | None, counted: Collection[int]) -> _Names:
    """Every grassroots organisation is listed, even with nothing counted, so shortfalls show."""
    query = select(Organisation.id, Organisation.code, Organisation.name).where(
        Organisation.kind.in_(GRASSROOTS)
    )
    if within is not None:
        query = query.where(Organisation.id.in_(sorted(within)))
    rows = s.execute(query.order_by(Organisation.code)).all()
    of = {r.id: (r.code, r.name) for r in rows}
    if missing := set(counted) - of.keys():
        of |= org_names(s, missing)
    return _Names([(r.code, r.name) for r in rows], of)


def compliance_behind(s: Session, year: int, org_id: int, process_key: str = LIFECYCLE) -> list[DrillRow]:
    """The projects one organisation's compliance figure counts, with the problems each solved."""
    return _behind(s, process_key, year, org_id, "projects", _solved)


def _solved(data: dict, _counted: int) -> str:
    return "；".join(str(p) for p in data.get("problems_solved") or [])


def _behind(
    s: Session, process_key: str, year: int, org_id: int, measure: str, detail: Callable[[dict, int], str]
) -> list[DrillRow]:
    """The instances one figure cell counts (engine.facts), each with ``detail(data, its value)``."""
    counted = facts.behind(s, process_key, year, org_id, measure)
    code, name = org_names(s, [org_id]).get(org_id, (str(org_id), str(org_id)))
    query = select(Instance.id, Instance.title, Instance.stage, Instance.status, Instance.data).where(
        Instance.id.in_(sorted(counted))
    )
    return [
        DrillRow(
            r.id, r.title or "", code, name, r.stage, r.status, detail=detail(r.data or {}, counted[r.id])
        )
        for r in s.execute(query.order_by(Instance.id))
    ]


# --- pledge cycle figures (承诺践诺) -----------------------------------------------------------------

PLEDGE_GRADES = ("好", "中", "差")  # the bands of workflows/pledge_evaluation.dmn, in display order
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
    """Per branch (org code): the year's pledge figures (engine.facts). Every grassroots organisation is
    listed. ``org`` (a code or id) limits it to that organisation and those below; ``within`` to a scope.
    """
    out, counted, _ = _per_organisation(s, PLEDGE, year, _org_ids(s, org, within), PledgeFigures)
    for row, counts in counted:
        for key, n in counts.items():
            if key.startswith(GRADE_PREFIX):
                row.grades[key[len(GRADE_PREFIX) :]] = n
            else:
                setattr(row, key, n)
    return out


def pledge_grade_columns(rows: Iterable[PledgeFigures]) -> list[str]:
    seen = {g for r in rows for g in r.grades}
    return [*PLEDGE_GRADES, *sorted(seen - set(PLEDGE_GRADES))]


def pledges_behind(s: Session, year: int, org_id: int, measure: str) -> list[DrillRow]:
    """The cycles behind one pledge figure: ``measure`` is one of PLEDGE_MEASURES or ``grade:<等次>``."""
    grade = measure.startswith(GRADE_PREFIX)
    if not grade and measure not in PLEDGE_MEASURES:
        raise NotFound(f"no pledge figure '{measure}'")
    if grade:
        return _behind(s, PLEDGE, year, org_id, measure, lambda data, _n: str(data.get("score", "")))
    return _behind(s, PLEDGE, year, org_id, measure, lambda _data, n: str(n))
