"""Dashboard figures (统计分析): who may see which organisations, projects by stage, overdue tasks,
organisation grades, and the rows behind every number (drill-down).

The yearly compliance and pledge figures live in ``engine.reports``; this module adds the rest and
the scope every figure is filtered by. Each figure is one grouped query over projections
(``instance``, ``human_task``) or a pass over the few ``instance.data`` summaries it needs; the
same per-row rule decides both a count and the rows a drill-down lists, so they always agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from engine.models import Definition, HumanTask, Instance, Membership, Organisation, User

LIFECYCLE = "project_lifecycle"
GRADING = "org_grading"
LIFECYCLE_STAGES = ("计划立项", "任务分解", "调研实践", "动态管控", "考评验收", "总结推广")
ORG_GRADES = ("好", "较好", "一般", "较差")
ENDED = "已结束"
FAILED = "异常"
NO_STAGE = "未开始"
# Who has a dashboard, and over which organisations: the subtree below each organisation where
# they hold one of these roles (a branch secretary: their branch; the committee: everything below).
DASHBOARD_ROLES = ("party_committee", "party_office", "branch_secretary")
# Years are Beijing years: a project closed at 23:30 on 31 December Beijing time belongs to that year.
CHINA = timezone(timedelta(hours=8))


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """[start, end) of a Beijing calendar year, as aware datetimes."""
    return datetime(year, 1, 1, tzinfo=CHINA), datetime(year + 1, 1, 1, tzinfo=CHINA)


# --- organisations and scope ---------------------------------------------------------------------


class OrgNode(NamedTuple):
    id: int
    code: str
    name: str
    kind: str
    parent_id: int | None


@dataclass
class OrgTree:
    """The whole organisation tree, read in one query (a province's 5,000 rows take milliseconds)."""

    nodes: dict[int, OrgNode]
    children: dict[int | None, list[int]]
    codes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, s: Session) -> OrgTree:
        rows = s.execute(
            select(
                Organisation.id,
                Organisation.code,
                Organisation.name,
                Organisation.kind,
                Organisation.parent_id,
            ).order_by(Organisation.id)
        )
        nodes = {r[0]: OrgNode(*r) for r in rows}
        children: dict[int | None, list[int]] = defaultdict(list)
        for node in nodes.values():
            children[node.parent_id].append(node.id)
        return cls(nodes, dict(children), {n.code: n.id for n in nodes.values()})

    def by_code(self, code: str) -> OrgNode | None:
        found = self.codes.get(code)
        return None if found is None else self.nodes[found]

    def subtree(self, root: int) -> set[int]:
        """The organisation and every organisation below it."""
        out: set[int] = set()
        todo = [root]
        while todo:
            org = todo.pop()
            if org in out or org not in self.nodes:
                continue
            out.add(org)
            todo.extend(self.children.get(org, ()))
        return out

    def in_tree_order(self, ids: Iterable[int]) -> list[OrgNode]:
        """Depth-first from the roots, so a list reads like the organisation chart."""
        wanted = set(ids)
        out: list[OrgNode] = []
        todo = list(reversed(self.children.get(None, [])))
        while todo:
            org = todo.pop()
            if org in wanted:
                out.append(self.nodes[org])
            todo.extend(reversed(self.children.get(org, [])))
        return out


@dataclass
class Scope:
    """The organisations one person's dashboard covers. ``org_ids`` None means every organisation."""

    tree: OrgTree
    org_ids: frozenset[int] | None
    roots: list[OrgNode] = field(default_factory=list)

    def sees(self, org_id: int) -> bool:
        return self.org_ids is None or org_id in self.org_ids

    def narrowed(self, code: str | None) -> Scope | None:
        """The scope limited to one organisation's subtree; None if the code is unknown or out of scope."""
        if not code:
            return self
        node = self.tree.by_code(code)
        if node is None or not self.sees(node.id):
            return None
        ids = self.tree.subtree(node.id)
        if self.org_ids is not None:
            ids &= self.org_ids
        return Scope(self.tree, frozenset(ids), [node])

    def visible_ids(self) -> set[int]:
        return set(self.tree.nodes) if self.org_ids is None else set(self.org_ids)


def dashboard_scope(s: Session, user_id: int, roles: tuple[str, ...] = DASHBOARD_ROLES) -> Scope:
    """Every organisation at or below one where the user holds a dashboard role (empty if none)."""
    tree = OrgTree.load(s)
    held = set(
        s.execute(
            select(Membership.org_id).where(Membership.user_id == user_id, Membership.role.in_(roles))
        ).scalars()
    )
    ids: set[int] = set()
    for org in held:
        ids |= tree.subtree(org)
    roots = [tree.nodes[o] for o in sorted(held) if not _has_ancestor_in(tree, o, held)]
    every = ids == set(tree.nodes)
    return Scope(tree, None if every else frozenset(ids), roots)


def _has_ancestor_in(tree: OrgTree, org: int, among: set[int]) -> bool:
    parent = tree.nodes[org].parent_id
    seen: set[int] = set()
    while parent is not None and parent not in seen:
        if parent in among:
            return True
        seen.add(parent)
        parent = tree.nodes[parent].parent_id if parent in tree.nodes else None
    return False


def _within(query: Any, column: Any, within: Collection[int] | None) -> Any:
    return query if within is None else query.where(column.in_(sorted(within)))


def _code_name(tree_or_names: dict[int, tuple[str, str]], org_id: int) -> tuple[str, str]:
    return tree_or_names.get(org_id, (str(org_id), str(org_id)))


def org_names(s: Session, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """(code, name) of the given organisations."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = s.execute(
        select(Organisation.id, Organisation.code, Organisation.name).where(Organisation.id.in_(wanted))
    )
    return {r.id: (r.code, r.name) for r in rows}


# --- projects by stage ---------------------------------------------------------------------------


@dataclass
class StageCounts:
    """One organisation's projects: running ones by current stage, and those ended in the year."""

    code: str
    name: str
    by_stage: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_stage.values())


def _project_filter(year: int) -> Any:
    """Running (or stopped by an incident) now, or ended during the year."""
    start, end = year_bounds(year)
    return or_(
        Instance.status.in_(("running", "failed")),
        and_(Instance.ended_at >= start, Instance.ended_at < end),
    )


def _stage_label(status: str, stage: str | None) -> str:
    if status == "failed":
        return FAILED
    if status in ("completed", "terminated"):
        return ENDED
    return stage or NO_STAGE


def projects_by_stage(
    s: Session, year: int, within: Collection[int] | None = None, process_key: str = LIFECYCLE
) -> dict[str, StageCounts]:
    """Per organisation (by code), its projects by stage: one grouped query on indexed columns."""
    query = (
        select(Organisation.code, Organisation.name, Instance.status, Instance.stage, func.count())
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(Instance.process_key == process_key, _project_filter(year))
        .group_by(Organisation.code, Organisation.name, Instance.status, Instance.stage)
    )
    out: dict[str, StageCounts] = {}
    for code, name, status, stage, n in s.execute(_within(query, Instance.org_id, within)):
        row = out.setdefault(code, StageCounts(code, name))
        label = _stage_label(status, stage)
        row.by_stage[label] = row.by_stage.get(label, 0) + n
    return dict(sorted(out.items()))


def stage_columns(rows: Iterable[StageCounts]) -> list[str]:
    """The six stages in order, then anything else seen (a process's other stage names), then ended."""
    seen = {k for r in rows for k in r.by_stage}
    extra = sorted(seen - set(LIFECYCLE_STAGES) - {ENDED, FAILED, NO_STAGE})
    tail = [c for c in (NO_STAGE, FAILED, ENDED) if c in seen or c == ENDED]
    return [*LIFECYCLE_STAGES, *extra, *tail]


# --- overdue tasks -------------------------------------------------------------------------------


@dataclass
class OverdueCounts:
    code: str
    name: str
    by_process: dict[str, int] = field(default_factory=dict)
    oldest_due: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.by_process.values())


def overdue_tasks(
    s: Session, now: datetime, within: Collection[int] | None = None
) -> dict[str, OverdueCounts]:
    """Per organisation, open tasks past their due date, by process, with the oldest due date."""
    counted = (
        select(
            HumanTask.org_id,
            HumanTask.process_key,
            func.count().label("n"),
            func.min(HumanTask.due_at).label("oldest"),
        )
        .where(HumanTask.state == "open", HumanTask.due_at < now)
        .group_by(HumanTask.org_id, HumanTask.process_key)
    )
    counted = _within(counted, HumanTask.org_id, within).subquery()
    query = select(
        Organisation.code, Organisation.name, counted.c.process_key, counted.c.n, counted.c.oldest
    ).join(Organisation, Organisation.id == counted.c.org_id)
    out: dict[str, OverdueCounts] = {}
    for code, name, process_key, n, oldest in s.execute(query):
        row = out.setdefault(code, OverdueCounts(code, name))
        row.by_process[process_key] = n
        oldest = _aware(oldest)
        if oldest is not None and (row.oldest_due is None or oldest < row.oldest_due):
            row.oldest_due = oldest
    return dict(sorted(out.items(), key=lambda kv: (-kv[1].total, kv[0])))


def _aware(value: datetime | None) -> datetime | None:
    """An aggregate (min) skips the column type on SQLite, so the zone is put back here."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def process_names(s: Session) -> dict[str, str]:
    """Each process key's display name (its newest version's)."""
    rows = s.execute(select(Definition.process_key, Definition.name).order_by(Definition.version))
    return {key: name for key, name in rows}


# --- organisation grades (分类定级) ----------------------------------------------------------------


@dataclass
class GradeRow:
    code: str
    name: str
    instance_id: int
    stage: str | None
    status: str
    grade: str | None = None
    score: float | None = None
    rectification: str | None = None  # 整改中 | 已晋位升级 | None (no rectification needed)


def org_grades(s: Session, year: int, within: Collection[int] | None = None) -> dict[str, GradeRow]:
    """Per organisation, the year's grading (分类定级): its grade, score and rectification state."""
    query = (
        select(
            Instance.id, Organisation.code, Organisation.name, Instance.stage, Instance.status, Instance.data
        )
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(Instance.process_key == GRADING, Instance.status != "terminated")
        .order_by(Instance.id)
    )
    out: dict[str, GradeRow] = {}
    for r in s.execute(_within(query, Instance.org_id, within)):
        data = r.data or {}
        if data.get("year") != year:
            continue
        out[r.code] = GradeRow(
            r.code,
            r.name,
            r.id,
            r.stage,
            r.status,
            data.get("grade"),
            data.get("final_score"),
            _rectification(data, r.status),
        )
    return dict(sorted(out.items()))


def _rectification(data: dict[str, Any], status: str) -> str | None:
    if not data.get("needs_rectification"):
        return None
    return "已晋位升级" if data.get("signoff_verdict") == "approve" and status == "completed" else "整改中"


UNGRADED = "未定级"


def grade_distribution(rows: Iterable[GradeRow]) -> dict[str, int]:
    """How many organisations got each grade; those whose grading is still under way as 未定级."""
    counts = dict.fromkeys((*ORG_GRADES, UNGRADED), 0)
    for row in rows:
        key = row.grade or UNGRADED
        counts[key] = counts.get(key, 0) + 1
    return counts


# --- drill-down: the rows behind a number --------------------------------------------------------


@dataclass
class DrillRow:
    instance_id: int
    title: str
    org_code: str
    org_name: str
    stage: str | None
    status: str
    detail: str = ""
    task_id: int | None = None
    due_at: datetime | None = None
    assignee: str | None = None


def projects_behind(
    s: Session, year: int, org_id: int, stage: str | None, process_key: str = LIFECYCLE
) -> list[DrillRow]:
    """The projects counted in one cell of ``projects_by_stage`` (``stage`` None: the whole row)."""
    rows = s.execute(
        select(Instance.id, Instance.title, Instance.status, Instance.stage, Instance.org_id)
        .where(Instance.process_key == process_key, Instance.org_id == org_id, _project_filter(year))
        .order_by(Instance.id)
    ).all()
    names = org_names(s, [org_id])
    code, name = _code_name(names, org_id)
    return [
        DrillRow(r.id, r.title or "", code, name, r.stage, r.status)
        for r in rows
        if stage is None or _stage_label(r.status, r.stage) == stage
    ]


def overdue_behind(s: Session, now: datetime, org_id: int, process_key: str | None) -> list[DrillRow]:
    """The overdue tasks counted in one cell of ``overdue_tasks``, oldest first."""
    query = (
        select(HumanTask, Instance.title, User.display_name)
        .join(Instance, Instance.id == HumanTask.instance_id)
        .outerjoin(User, User.id == HumanTask.assignee_id)
        .where(HumanTask.state == "open", HumanTask.due_at < now, HumanTask.org_id == org_id)
        .order_by(HumanTask.due_at, HumanTask.id)
    )
    if process_key:
        query = query.where(HumanTask.process_key == process_key)
    code, name = _code_name(org_names(s, [org_id]), org_id)
    out = []
    for task, title, assignee in s.execute(query):
        out.append(
            DrillRow(
                task.instance_id,
                title or "",
                code,
                name,
                task.stage,
                "open",
                detail=task.title,
                task_id=task.id,
                due_at=_aware(task.due_at),
                assignee=assignee,
            )
        )
    return out


def grades_behind(s: Session, year: int, org_id: int) -> list[DrillRow]:
    """The grading instance behind an organisation's grade: its stage, grade and score."""
    row = org_grades(s, year, [org_id])
    return [
        DrillRow(r.instance_id, f"{year} · {r.name}", r.code, r.name, r.stage, r.status, detail=r.grade or "")
        for r in row.values()
    ]
