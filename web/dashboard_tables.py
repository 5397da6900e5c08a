"""The dashboard's figures as tables: one model for the HTML table, the chart's JSON and the spreadsheet.

Each table is built from one engine query (``engine.figures`` / ``engine.reports``), the same ones the
tests check, so the page, the chart, the large screen and the .xlsx export cannot disagree. A cell
may link to the rows behind its number (the drill-down page).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from io import BytesIO
from typing import Any

from flask import url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from sqlalchemy.orm import Session

from engine import figures, reports
from engine.figures import Scope
from web.formatting import beijing_time

FIGURES = ("stages", "overdue", "compliance", "pledges", "grades")


@dataclass
class Cell:
    value: int | float | str | None
    href: str | None = None
    flag: bool = False  # highlighted: falls short, overdue, a low grade

    def as_json(self) -> Any:
        return self.value


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    chart: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, int | float] = field(default_factory=dict)
    note: str = ""
    orgs: list[str] = field(default_factory=list)  # each row's organisation code, for links and tests

    def as_json(self, year: int) -> dict[str, Any]:
        return {
            "figure": self.key,
            "title": self.title,
            "year": year,
            "columns": self.columns,
            "orgs": self.orgs,
            "rows": [[c.as_json() for c in row] for row in self.rows],
            "flags": [[c.flag for c in row] for row in self.rows],
            "chart": self.chart,
            "totals": self.totals,
            "note": self.note,
        }


@dataclass
class Context:
    """What every table needs: the session, the viewer's scope (maybe narrowed), the year and now."""

    s: Session
    scope: Scope
    year: int
    now: datetime
    org: str | None = None  # the organisation filter, kept on drill-down links

    @property
    def within(self) -> frozenset[int] | None:
        return self.scope.org_ids

    def drill(self, figure: str, org: str, key: str | None = None) -> str:
        return url_for("dashboard.drill", figure=figure, org=org, key=key, year=self.year)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {n.code: i for i, n in enumerate(self.scope.tree.in_tree_order(self.scope.visible_ids()))}

    def ordered(self, codes: list[str]) -> list[str]:
        """Codes in organisation-chart order (unknown codes last, by code)."""
        position = self._positions
        return sorted(codes, key=lambda c: (position.get(c, len(position)), c))


def _count(ctx: Context, n: int, figure: str, org: str, key: str | None = None, flag: bool = False) -> Cell:
    return Cell(n, ctx.drill(figure, org, key) if n else None, flag)


# --- the five figures ------------------------------------------------------------------------------


def stages_table(ctx: Context) -> Table:
    data = figures.projects_by_stage(ctx.s, ctx.year, ctx.within)
    columns = figures.stage_columns(data.values())
    table = Table(
        "stages",
        _("党建项目阶段分布"),
        [_("组织"), *[_stage_label(c) for c in columns], _("合计")],
        note=_("进行中的项目按当前阶段统计；“已结束”为本年度内结束的项目。"),
    )
    for code in ctx.ordered(list(data)):
        row = data[code]
        cells = [Cell(row.name)]
        cells += [_count(ctx, row.by_stage.get(c, 0), "stages", code, c) for c in columns]
        cells.append(_count(ctx, row.total, "stages", code))
        table.rows.append(cells)
        table.orgs.append(code)
    table.chart = {
        "type": "stacked",
        "categories": [r[0].value for r in table.rows],
        "series": [
            {
                "name": table.columns[i + 1],
                "data": [r[i + 1].value for r in table.rows],
                "links": [r[i + 1].href for r in table.rows],
            }
            for i in range(len(columns))
        ],
    }
    running = sum(r.total - r.by_stage.get(figures.ENDED, 0) for r in data.values())
    table.totals = {"running": running, "ended": sum(r.by_stage.get(figures.ENDED, 0) for r in data.values())}
    return table


def _stage_label(column: str) -> str:
    return {figures.ENDED: _("已结束"), figures.FAILED: _("异常"), figures.NO_STAGE: _("未开始")}.get(
        column, column
    )


def overdue_table(ctx: Context) -> Table:
    data = figures.overdue_tasks(ctx.s, ctx.now, ctx.within)
    names = figures.process_names(ctx.s)
    processes = sorted({p for r in data.values() for p in r.by_process})
    table = Table(
        "overdue",
        _("逾期未办任务"),
        [_("组织"), *[names.get(p, p) for p in processes], _("合计"), _("最早到期（北京时间）")],
        note=_("截至 %(now)s 已过办理期限、仍未办结的待办任务。", now=beijing_time(ctx.now)),
    )
    for code in ctx.ordered(list(data)):
        row = data[code]
        cells = [Cell(row.name)]
        for p in processes:
            n = row.by_process.get(p, 0)
            cells.append(_count(ctx, n, "overdue", code, p, flag=n > 0))
        cells.append(_count(ctx, row.total, "overdue", code, flag=row.total > 0))
        cells.append(Cell(beijing_time(row.oldest_due)))
        table.rows.append(cells)
        table.orgs.append(code)
    table.chart = {
        "type": "stacked",
        "categories": [r[0].value for r in table.rows],
        "series": [
            {
                "name": table.columns[i + 1],
                "data": [r[i + 1].value for r in table.rows],
                "links": [r[i + 1].href for r in table.rows],
            }
            for i in range(len(processes))
        ],
    }
    table.totals = {"overdue": sum(r.total for r in data.values())}
    return table


def compliance_table(ctx: Context) -> Table:
    data = reports.yearly_compliance(ctx.s, ctx.year, within=ctx.within)
    table = Table(
        "compliance",
        _("%(year)d 年度基层党组织达标情况", year=ctx.year),
        [_("组织"), _("党建项目（个）"), _("解决新问题（个）"), _("是否达标"), _("未达标原因")],
        note=_(
            "每个基层党组织每年至少实施 %(p)d 个党建项目、至少研究解决 %(q)d 个基层党建新问题。",
            p=reports.MIN_PROJECTS,
            q=reports.MIN_PROBLEMS,
        ),
    )
    codes = ctx.ordered(list(data))
    codes.sort(key=lambda c: data[c].compliant)  # those falling short first, in chart order
    for code in codes:
        row = data[code]
        short = not row.compliant
        table.orgs.append(code)
        table.rows.append(
            [
                Cell(row.name, flag=short),
                _count(ctx, row.projects, "compliance", code, flag=row.projects < reports.MIN_PROJECTS),
                _count(
                    ctx,
                    row.problems_solved,
                    "compliance",
                    code,
                    flag=row.problems_solved < reports.MIN_PROBLEMS,
                ),
                Cell(_("未达标") if short else _("达标"), flag=short),
                Cell("；".join(shortfall_reasons(row)), flag=short),
            ]
        )
    table.chart = {
        "type": "compliance",
        "categories": [r[0].value for r in table.rows],
        "series": [
            {
                "name": table.columns[i],
                "data": [r[i].value for r in table.rows],
                "links": [r[i].href for r in table.rows],
                "min": minimum,
            }
            for i, minimum in ((1, reports.MIN_PROJECTS), (2, reports.MIN_PROBLEMS))
        ],
        "short": [r[3].flag for r in table.rows],
    }
    table.totals = {
        "organisations": len(data),
        "short": sum(1 for r in data.values() if not r.compliant),
    }
    return table


def shortfall_reasons(row: reports.Compliance) -> list[str]:
    """Why an organisation falls short, in the reader's language (the engine says it in Chinese only)."""
    out = []
    if row.projects < reports.MIN_PROJECTS:
        out.append(_("党建项目 %(n)d 个，少于 %(min)d 个", n=row.projects, min=reports.MIN_PROJECTS))
    if row.problems_solved < reports.MIN_PROBLEMS:
        out.append(_("解决新问题 %(n)d 个，少于 %(min)d 个", n=row.problems_solved, min=reports.MIN_PROBLEMS))
    return out


def pledges_table(ctx: Context) -> Table:
    data = reports.pledge_year_figures(ctx.s, ctx.year, within=ctx.within)
    grades = reports.pledge_grade_columns(data.values())
    measures = [
        ("cycles", _("承诺党员（人）")),
        ("made", _("承诺事项")),
        ("approved", _("审核通过")),
        ("kept_on_time", _("按期兑现")),
        ("late_reports", _("逾期报告（次）")),
    ]
    table = Table(
        "pledges",
        _("%(year)d 年度党员承诺践诺", year=ctx.year),
        [_("支部"), *[label for _k, label in measures], *[_("评议%(g)s", g=g) for g in grades]],
        note=_("承诺事项以最近一次提交的承诺书为准；审核通过为支部审诺同意的承诺事项；评议等次见评议考核。"),
    )
    for code in ctx.ordered(list(data)):
        row = data[code]
        cells = [Cell(row.name)]
        cells += [
            _count(
                ctx,
                getattr(row, key),
                "pledges",
                code,
                key,
                flag=key == "late_reports" and getattr(row, key) > 0,
            )
            for key, _label in measures
        ]
        cells += [
            _count(
                ctx,
                row.grades.get(g, 0),
                "pledges",
                code,
                f"grade:{g}",
                flag=g == "差" and row.grades.get(g, 0) > 0,
            )
            for g in grades
        ]
        table.rows.append(cells)
        table.orgs.append(code)
    with_cycles = [r for r in table.rows if r[1].value]
    table.chart = {
        "type": "pledges",
        "categories": [r[0].value for r in with_cycles],
        "series": [
            {
                "name": table.columns[i],
                "data": [r[i].value for r in with_cycles],
                "links": [r[i].href for r in with_cycles],
            }
            for i in (2, 3, 4)
        ],
        "pie": [{"name": g, "value": sum(r.grades.get(g, 0) for r in data.values())} for g in grades],
        "pie_name": _("评议等次"),
    }
    table.totals = {key: sum(getattr(r, key) for r in data.values()) for key, _label in measures}
    return table


def grades_table(ctx: Context) -> Table:
    data = figures.org_grades(ctx.s, ctx.year, ctx.within)
    table = Table(
        "grades",
        _("%(year)d 年度基层党组织分类定级", year=ctx.year),
        [_("组织"), _("等次"), _("综合得分"), _("当前阶段"), _("整改提高")],
        note=_("好 / 较好 / 一般 / 较差；一般和较差须制定整改方案，党委验收同意后晋位升级。"),
    )
    low = {"一般", "较差"}
    for code in ctx.ordered(list(data)):
        row = data[code]
        table.orgs.append(code)
        table.rows.append(
            [
                Cell(row.name),
                Cell(row.grade or _("未定级"), ctx.drill("grades", code), flag=row.grade in low),
                Cell(row.score),
                Cell(row.stage or "—"),
                Cell(_rectification_label(row.rectification), flag=row.rectification == "整改中"),
            ]
        )
    distribution = figures.grade_distribution(data.values())
    table.chart = {
        "type": "pie",
        "pie": [
            {"name": _("未定级") if g == figures.UNGRADED else g, "value": n} for g, n in distribution.items()
        ],
    }
    table.totals = {"graded": sum(1 for r in data.values() if r.grade), "organisations": len(data)}
    return table


def _rectification_label(state: str | None) -> str:
    return {"整改中": _("整改中"), "已晋位升级": _("已晋位升级")}.get(state or "", "—")


BUILDERS: dict[str, Callable[[Context], Table]] = {
    "stages": stages_table,
    "overdue": overdue_table,
    "compliance": compliance_table,
    "pledges": pledges_table,
    "grades": grades_table,
}


def build(ctx: Context, figure: str) -> Table:
    return BUILDERS[figure](ctx)


def build_all(ctx: Context) -> list[Table]:
    return [build(ctx, f) for f in FIGURES]


# --- the spreadsheet -------------------------------------------------------------------------------

SHEET_NAMES = {
    "stages": _l("项目阶段"),
    "overdue": _l("逾期任务"),
    "compliance": _l("年度达标"),
    "pledges": _l("承诺践诺"),
    "grades": _l("分类定级"),
}
HEADER = Font(bold=True, color="FFFFFF")
HEADER_FILL = PatternFill("solid", fgColor="C8161D")
FLAG_FONT = Font(color="C8161D", bold=True)


def workbook(tables: list[Table]) -> bytes:
    """One sheet per figure: the table's header row (Chinese), then its rows, numbers as numbers."""
    book = Workbook()
    book.remove(book.active)
    for table in tables:
        sheet = book.create_sheet(str(SHEET_NAMES[table.key]))
        sheet.append(table.columns)
        for cell in sheet[1]:
            cell.font, cell.fill = HEADER, HEADER_FILL
        for number, row in enumerate(table.rows, start=2):
            for column, source in enumerate(row, start=1):
                cell = sheet.cell(number, column, source.value)
                if isinstance(source.value, str) and source.value.startswith("="):
                    cell.data_type = "s"  # a name that looks like a formula stays text (no formula injection)
                if source.flag:
                    cell.font = FLAG_FONT
        sheet.freeze_panes = "B2"
        for index, title in enumerate(table.columns, start=1):
            width = max([len(str(title))] + [len(str(r[index - 1].value or "")) for r in table.rows[:200]])
            sheet.column_dimensions[get_column_letter(index)].width = min(60, 4 + width * 2)
    out = BytesIO()
    book.save(out)
    return out.getvalue()
