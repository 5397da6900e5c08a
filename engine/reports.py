"""Yearly figures that leaders assess party-building by (政工一体化考核), as queries a dashboard can use.

Grassroots organisations must each year run at least one party-building project and solve at
least two new problems (每年至少实施1个党建项目,至少研究解决2个基层党建新问题). Every grassroots
organisation is listed, so those with nothing at all show up as falling short too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def yearly_compliance(s: Session, year: int, process_key: str = LIFECYCLE) -> dict[str, Compliance]:
    """Per grassroots organisation (by code): approved projects whose period starts in ``year``, and the
    problems their summaries list as solved."""
    orgs = s.execute(select(Organisation.code, Organisation.name).where(Organisation.kind.in_(GRASSROOTS)))
    report = {code: Compliance(code, name) for code, name in orgs}
    rows = s.execute(
        select(Organisation.code, Organisation.name, Instance.data, Instance.title)
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(Instance.process_key == process_key)
    )
    for code, name, data, title in rows:
        data = data or {}
        if data.get("initiation_decision") != "立项" or not str(data.get("period_start", "")).startswith(
            str(year)
        ):
            continue
        row = report.setdefault(code, Compliance(code, name))
        row.projects += 1
        row.titles.append(title or "")
        row.problems_solved += len(data.get("problems_solved") or [])
    return report
