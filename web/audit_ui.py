"""The auditor's read-only audit trail (/audit): filter, page, inspect, follow an instance, export.

Readers are auditors and administrators, each within their scope (engine.audit_query.Scope).
Nothing here changes the trail except the one event an export appends about itself. Lists are
keyset pages on ``seq``; the chain status box verifies incrementally (ChainMonitor), never the
whole chain per page view; exports stream page by page in constant memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request, stream_with_context
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from engine import audit_export, audit_query
from engine.audit_query import AuditFilter, ChainMonitor, EventView, Scope
from engine.models import Definition, Organisation
from web.access import require_role
from web.extension import current_engine
from web.formatting import BEIJING

bp = Blueprint("audit_ui", __name__, url_prefix="/audit")

READERS = ("auditor", "admin")
MONITOR_KEY = "qizhi.audit_monitor"
FILTER_FIELDS = ("since", "until", "actor", "action", "org", "process", "instance", "q")

# Every action the trail records, in words. Codes not listed (a newer module's) show as the code.
ACTION_LABELS = {
    "definition.deployed": _l("部署流程定义"),
    "instance.started": _l("发起流程"),
    "instance.completed": _l("流程结束"),
    "instance.suspended": _l("挂起流程"),
    "instance.resumed": _l("恢复流程"),
    "instance.terminated": _l("终止流程"),
    "task.created": _l("生成待办"),
    "task.completed": _l("提交办理"),
    "task.cancelled": _l("待办取消"),
    "task.claimed": _l("认领任务"),
    "task.unclaimed": _l("释放任务"),
    "task.delegated": _l("转办任务"),
    "task.reminder": _l("到期提醒"),
    "task.escalated": _l("超时督办"),
    "timer.scheduled": _l("设置定时"),
    "timer.rescheduled": _l("调整定时"),
    "timer.cancelled": _l("取消定时"),
    "timer.fired": _l("定时触发"),
    "timer.skipped": _l("定时跳过"),
    "message.delivered": _l("收到消息"),
    "engine.steps": _l("自动步骤"),
    "incident.raised": _l("发生异常"),
    "incident.retried": _l("异常重试并解除"),
    "signed_in": _l("登录"),
    "sign_in_failed": _l("登录失败"),
    "signed_out": _l("退出登录"),
    "org_added": _l("新增组织"),
    "org_renamed": _l("组织更名"),
    "org_removed": _l("删除组织"),
    "user_added": _l("新增用户"),
    "password_set": _l("设置密码"),
    "user_deactivated": _l("停用用户"),
    "user_reactivated": _l("启用用户"),
    "user_unlocked": _l("解除锁定"),
    "role_granted": _l("授予角色"),
    "role_revoked": _l("撤销角色"),
    "group_joined": _l("加入小组"),
    "group_left": _l("退出小组"),
    "feedback_posted": _l("群众留言"),
    "feedback_hidden": _l("隐藏留言"),
    "feedback_unhidden": _l("恢复留言"),
    "token.created": _l("创建接口令牌"),
    "token.revoked": _l("吊销接口令牌"),
    "audit_exported": _l("导出审计记录"),
    "audit_checkpointed": _l("记录审计检查点"),
}

# Why a verification failed, in words (engine.audit.Verdict.kind).
BREAK_LABELS = {
    "missing": _l("记录缺失（被删除）"),
    "link": _l("与前一条记录的链接断开（被插入或调换）"),
    "hash": _l("内容与其哈希不符（被修改）"),
    "head": _l("链头与最后一条记录不符（链头被伪造）"),
    "beyond": _l("链头之后出现多余记录（被插入）"),
    "checkpoint": _l("与已记录的检查点不符（历史被改写）"),
    "against": _l("与导出的链头不符（历史被改写）"),
    "anchor": _l("校验起点的记录已被修改"),
}
BASIS_LABELS = {
    "genesis": _l("自第一条记录起"),
    "checkpoint": _l("自最近的检查点起"),
    "window": _l("最近的记录"),
}
STATUS_LABELS = {
    "running": _l("运行中"),
    "completed": _l("已完成"),
    "failed": _l("异常中止"),
    "suspended": _l("已挂起"),
    "terminated": _l("已终止"),
}


def action_label(code: str) -> str:
    return str(ACTION_LABELS.get(code, code))


# --- filters from a query string or a form -------------------------------------------------------


@dataclass
class FilterForm:
    """The filter as typed (``values``, to fill the form and the links) and as understood (``filter``)."""

    values: dict[str, str]
    filter: AuditFilter = field(default_factory=AuditFilter)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def q(self) -> str:
        return self.values.get("q", "")


def read_filters(source: MultiDict[str, str], s: Session, scope: Scope) -> FilterForm:
    values = {k: source.get(k, "").strip() for k in FILTER_FIELDS}
    values = {k: v for k, v in values.items() if v}
    form = FilterForm(values)
    since = _moment(values.get("since"), "since", form)
    until = _moment(values.get("until"), "until", form, end=True)
    if since and until and since >= until:
        form.errors["until"] = _("结束时间须晚于开始时间。")
    instance = values.get("instance")
    instance_id = None
    if instance:
        if instance.isdigit() and 0 < int(instance) < 2**62:
            instance_id = int(instance)
        else:
            form.errors["instance"] = _("实例编号须为正整数。")
    org_id = None
    if values.get("org"):
        org_id = _org_in_scope(values["org"], s, scope)
        if org_id is None:
            form.errors["org"] = _("没有这个组织，或不在您的审计范围内。")
    for key in ("actor", "action", "process"):
        if len(values.get(key, "")) > 128:
            form.errors[key] = _("输入过长。")
    if len(form.q) > 100:
        form.errors["q"] = _("输入过长。")
    if not form.errors:
        form.filter = AuditFilter(
            since=since,
            until=until,
            actor=values.get("actor"),
            action=values.get("action"),
            org_id=org_id,
            process=values.get("process"),
            instance_id=instance_id,
        )
    return form


def _moment(text: str | None, key: str, form: FilterForm, end: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        return parse_moment(text, end)
    except ValueError:
        form.errors[key] = _("时间格式应为 2025-06-30 或 2025-06-30T14:30。")
        return None


def parse_moment(text: str, end: bool = False) -> datetime:
    """A date or a minute typed in Beijing time, in UTC; as an end, a date or a minute includes itself.

    ValueError if it is neither. Shared by the filter form and ``qizhi audit export``.
    """
    if len(text) == 10:
        start = datetime.combine(date.fromisoformat(text), time(), BEIJING)
        moment = start + timedelta(days=1) if end else start
    else:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=BEIJING)
        if end and moment.second == 0 and moment.microsecond == 0:
            moment += timedelta(minutes=1)  # "until 10:30" includes the minute 10:30
    return moment.astimezone(UTC)


def _org_in_scope(text: str, s: Session, scope: Scope) -> int | None:
    if not text.isdigit() or int(text) >= 2**62:
        return None
    org_id = int(text)
    exists = s.execute(select(Organisation.id).where(Organisation.id == org_id)).scalar()
    return org_id if exists is not None and scope.allows(org_id) else None


def _cursor(name: str) -> int | None:
    text = request.args.get(name, "")
    if not text:
        return None
    if not text.isdigit() or int(text) >= 2**62:
        abort(400)
    return int(text)


def _scope(s: Session) -> Scope:
    return audit_query.scope_for(s, current_user.id)


def monitor() -> ChainMonitor:
    """This process's chain monitor, so the status box verifies only what is new since the last view."""
    return current_app.extensions.setdefault(MONITOR_KEY, ChainMonitor())


# --- pages ---------------------------------------------------------------------------------------


@bp.get("/")
@require_role(*READERS)
def index() -> tuple[str, int]:
    with current_engine().db.read() as s:
        scope = _scope(s)
        form = read_filters(request.args, s, scope)
        before, after = _cursor("before"), _cursor("after")
        result = audit_query.Page([])
        found = []
        if not form.errors:
            result = audit_query.page(s, form.filter, scope, before=before, after=after)
            found = audit_query.find_instances(s, form.q, scope) if form.q else []
        status = monitor().status(s)
        orgs = _orgs(s, scope)
        processes = list(
            s.execute(select(Definition.process_key).distinct().order_by(Definition.process_key)).scalars()
        )
    html = render_template(
        "audit/index.html",
        form=form,
        page=result,
        found=found,
        status=status,
        orgs=orgs,
        processes=processes,
        actions=ACTION_LABELS,
        paged=before is not None or after is not None,
        **_helpers(),
    )
    return html, 400 if form.errors else 200


@bp.get("/event/<int:seq>")
@require_role(*READERS)
def event(seq: int) -> str:
    with current_engine().db.read() as s:
        view = audit_query.event(s, seq, _scope(s))
        check = audit_query.integrity(s, view)
    return render_template("audit/event.html", e=view, check=check, **_helpers())


@bp.get("/instance/<int:instance_id>")
@require_role(*READERS)
def instance(instance_id: int) -> str:
    after = _cursor("after") or 0
    with current_engine().db.read() as s:
        line = audit_query.timeline(s, instance_id, _scope(s), after=after)
    return render_template("audit/instance.html", line=line, after=after, **_helpers())


@bp.post("/export")
@require_role(*READERS)
def export() -> Response | tuple[str, int]:
    """Record the export, then stream it: the record goes first, so even an aborted download is on file."""
    fmt = request.form.get("format", "")
    if fmt not in audit_export.FORMATS:
        abort(400)
    db = current_engine().db
    with db.write() as s:
        scope = _scope(s)
        form = read_filters(request.form, s, scope)
        if form.errors:
            message = " ".join(form.errors.values())
            return render_template("error.html", status=400, title=_("请求有误"), message=message), 400
        upto = audit_export.record(s, current_user.username, fmt, form.filter, scope)
    stamp = datetime.now(BEIJING).strftime("%Y%m%d-%H%M%S")
    chunks = audit_export.stream(db, fmt, form.filter, scope, upto)
    return Response(
        stream_with_context(chunks),
        content_type=audit_export.FORMATS[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="qizhi-audit-{stamp}.{fmt}"',
            "Cache-Control": "no-store",
        },
    )


# --- helpers for the templates -------------------------------------------------------------------


def _orgs(s: Session, scope: Scope) -> list[tuple[int, str, str]]:
    query = select(Organisation.id, Organisation.code, Organisation.name).order_by(Organisation.code)
    if scope.org_ids is not None:
        query = query.where(Organisation.id.in_(sorted(scope.org_ids)))
    return [tuple(row) for row in s.execute(query)]  # type: ignore[misc]


def _helpers() -> dict[str, Any]:
    return {
        "action_label": action_label,
        "break_labels": BREAK_LABELS,
        "basis_labels": BASIS_LABELS,
        "status_labels": STATUS_LABELS,
        "summary": summary,
        "exact_time": exact_time,
        "as_json": as_json,
    }


def exact_time(value: datetime) -> str:
    """To the second, Beijing time: an audit trail is read closer than a task list."""
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def as_json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=True, default=str)


def summary(e: EventView, limit: int = 120) -> str:
    """One line about what the event carried: the task's title and its submitted fields, or the payload."""
    payload = e.payload
    parts: list[str] = []
    if payload.get("title"):
        parts.append(str(payload["title"]))
    data = payload.get("data")
    if isinstance(data, dict) and data:
        parts.append("；".join(f"{k}={_short(v)}" for k, v in data.items()))
    if e.action == "task.delegated":
        parts.append(f"{payload.get('from') or '—'} → {payload.get('to')}")
    if payload.get("reason"):
        parts.append(str(payload["reason"]))
    if not parts:
        shown = {k: v for k, v in payload.items() if k not in ("task", "diff")}
        parts.append("；".join(f"{k}={_short(v)}" for k, v in shown.items()))
    text = " · ".join(p for p in parts if p)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else as_json(value)
    return text if len(text) <= 40 else text[:39] + "…"
