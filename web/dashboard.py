"""Dashboards (/dashboard): projects by stage, overdue tasks, compliance, pledges, grades, the large screen.

Every figure is a server-rendered table (works without JavaScript) and the same numbers as JSON
(``/dashboard/data/<figure>.json``), which ``static/js/dashboard.js`` draws with ECharts; the
spreadsheet export writes the same tables. A person sees the organisations at or below those where
they hold a dashboard role (``engine.figures.dashboard_scope``): a branch secretary their branch,
the committee and the office everything below them. Any other organisation answers 404.
"""

from __future__ import annotations

import os
from datetime import datetime

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.wrappers import Response

from engine import EngineError, NotFound, ValidationFailed, excellence, figures, reports
from engine.errors import Forbidden, InvalidState
from engine.figures import CHINA, DASHBOARD_ROLES, Scope
from web import dashboard_tables as tables
from web.access import require_role
from web.extension import current_engine

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

SCREEN_REFRESH_SECONDS = 60
# Rows of each table rendered on the page; a province-wide view has ~5,000 organisations per figure,
# which the charts' JSON and the export carry in full (the compliance table lists shortfalls first).
TABLE_ROWS = 500
STATUS_LABELS = {
    "running": _l("进行中"),
    "completed": _l("已完成"),
    "failed": _l("异常"),
    "terminated": _l("已终止"),
    "open": _l("待办"),
}
RATIO_SETTING = "QIZHI_EXCELLENT_RATIO"
MIN_YEAR, MAX_YEAR = 2000, 2100


def this_year() -> int:
    return current_engine().clock().astimezone(CHINA).year


def _year() -> int:
    """The ``year`` query parameter (default: this Beijing year); anything else is a 400 that says so."""
    raw = request.args.get("year", "").strip()
    if not raw:
        return this_year()
    if not raw.isdigit() or not MIN_YEAR <= int(raw) <= MAX_YEAR:
        abort(400, description=_("年度应为 %(a)d 至 %(b)d 之间的年份。", a=MIN_YEAR, b=MAX_YEAR))
    return int(raw)


def _context(s, viewer: Scope | None = None) -> tables.Context:  # type: ignore[no-untyped-def]
    """The figures' context: the viewer's scope narrowed to ``?org=CODE`` (404 outside it), the year."""
    viewer = viewer or figures.dashboard_scope(s, current_user.id)
    org = request.args.get("org", "").strip() or None
    narrowed = viewer.narrowed(org)
    if narrowed is None:
        abort(404)
    return tables.Context(s, narrowed, _year(), current_engine().clock(), org)


def _filter_orgs(scope: Scope, chosen: str | None, limit: int = 400) -> list[figures.OrgNode]:
    """Organisations offered in the filter: every committee and general branch, then branches up to
    ``limit`` (a province has thousands: any other is reached by its code in the URL), and the chosen one."""
    nodes = [n for n in scope.tree.in_tree_order(scope.visible_ids()) if n.kind != "group"]
    upper = [n for n in nodes if n.kind != "branch"]
    offered = upper + [n for n in nodes if n.kind == "branch"][: max(0, limit - len(upper))]
    picked = scope.tree.by_code(chosen) if chosen else None
    if picked is not None and picked not in offered:
        offered.append(picked)
    return offered


@bp.get("/")
@require_role(*DASHBOARD_ROLES)
def index() -> str:
    with current_engine().db.read() as s:
        viewer = figures.dashboard_scope(s, current_user.id)
        ctx = _context(s, viewer)
        built = tables.build_all(ctx)
        orgs = _filter_orgs(viewer, ctx.org)
    return render_template(
        "dashboard/index.html",
        tables=built,
        year=ctx.year,
        org=ctx.org,
        orgs=orgs,
        years=range(this_year(), this_year() - 6, -1),
        may_select=current_user.has_role(excellence.SELECTING_ROLE),
        row_limit=TABLE_ROWS,
    )


@bp.get("/data/<figure>.json")
@require_role(*DASHBOARD_ROLES)
def data(figure: str) -> Response:
    if figure not in tables.FIGURES:
        return _json_error(404, _("没有这项统计。"))
    raw = request.args.get("year", "").strip()
    if raw and (not raw.isdigit() or not MIN_YEAR <= int(raw) <= MAX_YEAR):
        return _json_error(400, _("年度应为 %(a)d 至 %(b)d 之间的年份。", a=MIN_YEAR, b=MAX_YEAR))
    with current_engine().db.read() as s:
        ctx = _context(s)
        table = tables.build(ctx, figure)
    response = jsonify(table.as_json(ctx.year))
    response.headers["Cache-Control"] = "no-store"
    return response


def _json_error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


@bp.get("/screen")
@require_role(*DASHBOARD_ROLES)
def screen() -> str:
    """The large screen (大屏): charts only, re-fetched every minute by dashboard.js."""
    with current_engine().db.read() as s:
        ctx = _context(s)
        built = {t.key: t for t in tables.build_all(ctx)}
    return render_template(
        "dashboard/screen.html",
        tables=built,
        year=ctx.year,
        org=ctx.org,
        refresh=SCREEN_REFRESH_SECONDS,
        now=ctx.now,
    )


@bp.get("/export.xlsx")
@require_role(*DASHBOARD_ROLES)
def export() -> Response:
    with current_engine().db.read() as s:
        ctx = _context(s)
        body = tables.workbook(tables.build_all(ctx))
    name = f"qizhi-{ctx.year}{'-' + ctx.org if ctx.org else ''}.xlsx"
    response = current_app.response_class(
        body, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- drill-down -------------------------------------------------------------------------------------


@bp.get("/drill")
@require_role(*DASHBOARD_ROLES)
def drill() -> str:
    """The projects, cycles or tasks behind one number of a figure, in the viewer's scope."""
    figure = request.args.get("figure", "")
    key = request.args.get("key") or None
    if figure not in tables.FIGURES:
        abort(404)
    with current_engine().db.read() as s:
        scope = figures.dashboard_scope(s, current_user.id)
        node = scope.tree.by_code(request.args.get("org", "").strip())
        if node is None or not scope.sees(node.id):
            abort(404)
        year, now = _year(), current_engine().clock()
        try:
            rows = _rows_behind(s, figure, year, now, node.id, key)
        except NotFound:
            abort(404)
    return render_template(
        "dashboard/drill.html",
        rows=rows,
        figure=figure,
        title=_drill_title(figure, key),
        org=node,
        year=year,
        tasks=figure == "overdue",
        status_labels=STATUS_LABELS,
    )


def _rows_behind(  # type: ignore[no-untyped-def]
    s, figure: str, year: int, now: datetime, org_id: int, key: str | None
) -> list[figures.DrillRow]:
    if figure == "stages":
        return figures.projects_behind(s, year, org_id, key)
    if figure == "overdue":
        return figures.overdue_behind(s, now, org_id, key)
    if figure == "compliance":
        return reports.compliance_behind(s, year, org_id)
    if figure == "pledges":
        return reports.pledges_behind(s, year, org_id, key or "cycles")
    return figures.grades_behind(s, year, org_id)


def _drill_title(figure: str, key: str | None) -> str:
    labels = {
        "stages": _("党建项目"),
        "overdue": _("逾期未办任务"),
        "compliance": _("计入年度达标的党建项目"),
        "pledges": _("党员承诺践诺"),
        "grades": _("分类定级"),
    }
    measures = {
        "cycles": _("承诺党员"),
        "made": _("有承诺事项"),
        "approved": _("审核通过"),
        "kept_on_time": _("有按期兑现"),
        "late_reports": _("有逾期报告"),
    }
    title = labels[figure]
    if figure == "pledges" and key:
        detail = measures.get(key) or (_("评议%(g)s", g=key.removeprefix("grade:")))
        return f"{title} · {detail}"
    return f"{title} · {key}" if key and figure in ("stages", "overdue") else title


# --- 评选优秀党建项目 ----------------------------------------------------------------------------------


def selection_ratio() -> float:
    """The cap's share of accepted projects: QIZHI_EXCELLENT_RATIO (app config or environment), 0.5 unset."""
    raw = current_app.config.get(RATIO_SETTING) or os.environ.get(RATIO_SETTING)
    if raw in (None, ""):
        return excellence.DEFAULT_RATIO
    try:
        ratio = float(raw)
        excellence.cap(1, ratio)
    except (TypeError, ValueError):
        current_app.logger.error("%s=%r is not a share between 0 and 1; using %s", RATIO_SETTING, raw, 0.5)
        return excellence.DEFAULT_RATIO
    return ratio


@bp.route("/selection", methods=["GET", "POST"])
@require_role(excellence.SELECTING_ROLE)
def selection() -> str | Response | tuple[str, int]:
    """The committee's yearly pick of excellent projects, capped on the server."""
    year = _year() if request.method == "GET" else _form_year()
    ratio = selection_ratio()
    engine = current_engine()
    refused: EngineError | None = None
    chosen: list[int] = []
    if request.method == "POST":
        raw = request.form.getlist("selected")
        if not all(c.isdigit() for c in raw):
            abort(400, description=_("所选项目无效。"))
        chosen = [int(c) for c in raw]
        try:
            with engine.db.write() as s:
                picked = excellence.select_excellent(
                    s, year, current_user.username, chosen, engine.clock(), ratio
                )
        except (ValidationFailed, InvalidState, Forbidden, NotFound) as err:
            refused = err
        else:
            flash(_("已评选 %(n)d 个 %(year)d 年度优秀党建项目。", n=len(picked), year=year), "success")
            return redirect(url_for("dashboard.selection", year=year))
    with engine.db.read() as s:
        scope = excellence.committee_scope(s, current_user.id)
        pool = excellence.candidates(s, year, scope)
    limit = excellence.cap(len(pool), ratio)
    page = render_template(
        "dashboard/selection.html",
        year=year,
        candidates=pool,
        cap=limit,
        ratio=ratio,
        done=any(c.excellent_year == year for c in pool),
        error=_refusal(refused, chosen, len(pool), limit) if refused else None,
        chosen=set(chosen),
    )
    return (page, 422) if refused else page


def _form_year() -> int:
    raw = request.form.get("year", "").strip()
    if not raw.isdigit() or not MIN_YEAR <= int(raw) <= MAX_YEAR:
        abort(400, description=_("年度应为 %(a)d 至 %(b)d 之间的年份。", a=MIN_YEAR, b=MAX_YEAR))
    return int(raw)


def _refusal(err: EngineError, chosen: list[int], accepted: int, limit: int) -> str:
    """Why the engine refused the pick, in the reader's language."""
    if isinstance(err, ValidationFailed):
        if not chosen:
            return _("请至少选择一个项目。")
        return _(
            "超过评选上限：本年度已验收 %(n)d 个项目，最多可评选 %(cap)d 个，您选择了 %(k)d 个。",
            n=accepted,
            cap=limit,
            k=len(set(chosen)),
        )
    if isinstance(err, InvalidState):
        if (err.details or {}).get("reason") == excellence.ALREADY_SELECTED:
            return _("本年度优秀党建项目已评选，不能重复评选。")
        return _("本年度没有已验收的党建项目可供评选。")
    return _("所选项目不在可评选范围内，请刷新后重试。")
