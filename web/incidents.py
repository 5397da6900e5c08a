"""Incidents: failed jobs and scripts, retried or resolved by the party office (/incidents).

The list shows what the signed-in person may handle: incidents of instances in organisations
where they are party office or administrator, or below one. Anyone else gets 403 for the page
and 404 for an incident (they must not learn it exists). Retry and resolve go through the
engine, which checks the same rule again and writes the audit event (incident.retried,
incident.resolved).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from engine import EngineError, Forbidden, ValidationFailed
from engine import incidents as engine_incidents
from engine.models import AuditEvent
from engine.runtime import INCIDENT_ROLES
from web.access import require_role
from web.extension import current_engine

bp = Blueprint("incidents", __name__, url_prefix="/incidents")
PAGE = 50
INCIDENT_KINDS = {
    "job": _l("后台任务失败"),
    "script": _l("脚本错误"),
    "script_timeout": _l("脚本超时"),
    "script_refused": _l("脚本被拒绝执行"),
    "data": _l("流程数据错误"),
}
JOB_KINDS = {
    "timer": _l("定时器"),
    "reminder": _l("到期提醒与督办"),
    "email": _l("邮件通知"),
    "webhook": _l("消息推送"),
}
STATES = {"open": _l("待处理"), "resolved": _l("已处理")}
TRAIL = ("incident.raised", "incident.retried", "incident.resolved")


def job_label(kind: str | None) -> str:
    if not kind:
        return "—"
    return str(JOB_KINDS.get(kind.partition(":")[0], kind))


def _labels() -> dict[str, Any]:
    return {"incident_kinds": INCIDENT_KINDS, "job_label": job_label, "states": STATES}


@bp.get("/")
@require_role(*INCIDENT_ROLES)
def index() -> str:
    state = request.args.get("state", "open")
    state = state if state in STATES else "open"
    raw = request.args.get("before", "")
    before = int(raw) if raw.isdigit() else None
    with current_engine().db.read() as s:
        views = engine_incidents.list_incidents(s, current_user.id, state, before, PAGE + 1)
    more = views[PAGE - 1].incident.id if len(views) > PAGE else None
    return render_template("incidents/index.html", views=views[:PAGE], state=state, more=more, **_labels())


def _page(incident_id: int, status: int = 200, **form: Any) -> tuple[str, int]:
    with current_engine().db.read() as s:
        view = engine_incidents.incident_view(s, current_user.id, incident_id)
        events = s.execute(
            select(AuditEvent)
            .where(AuditEvent.instance_id == view.incident.instance_id, AuditEvent.action.in_(TRAIL))
            .order_by(AuditEvent.seq)
        ).scalars()
        trail = [e for e in events if (e.payload or {}).get("incident") == incident_id]
    values = {"data": "", "comment": "", "error": None, "field": None} | form
    return render_template("incidents/detail.html", view=view, trail=trail, form=values, **_labels()), status


@bp.get("/<int:incident_id>")
@require_role(*INCIDENT_ROLES)
def show(incident_id: int) -> tuple[str, int]:
    return _page(incident_id)


@bp.post("/<int:incident_id>/retry")
@require_role(*INCIDENT_ROLES)
def retry(incident_id: int) -> Response | tuple[str, int]:
    """Run the failed step again, with corrected data if given (a JSON object merged into the step's data)."""
    text = request.form.get("data", "").strip()
    data: dict[str, Any] = {}
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            message = _('修正数据须为 JSON 对象，例如 {"score": 80}。')
            return _page(incident_id, 400, data=text, error=message, field="data")
        data = parsed
    _visible(incident_id)
    try:
        current_engine().retry_incident(incident_id, current_user.username, data)
    except Forbidden:
        raise
    except EngineError as err:
        return _page(incident_id, 409, data=text, error=_("无法重试：%(reason)s", reason=err.message))
    flash(_("已重新执行，流程将继续运行。"), "info")
    return redirect(url_for("incidents.show", incident_id=incident_id))


@bp.post("/<int:incident_id>/resolve")
@require_role(*INCIDENT_ROLES)
def resolve(incident_id: int) -> Response | tuple[str, int]:
    """Close the incident without running anything again; a comment says why."""
    comment = request.form.get("comment", "").strip()
    _visible(incident_id)
    if not comment or len(comment) > engine_incidents.MAX_COMMENT:
        message = _("请填写处理说明（1 至 %(n)d 字）。", n=engine_incidents.MAX_COMMENT)
        return _page(incident_id, 400, comment=comment, error=message, field="comment")
    try:
        engine_incidents.resolve(current_engine(), incident_id, current_user.username, comment)
    except Forbidden:
        raise
    except ValidationFailed:
        message = _("请填写处理说明（1 至 %(n)d 字）。", n=engine_incidents.MAX_COMMENT)
        return _page(incident_id, 400, comment=comment, error=message, field="comment")
    except EngineError as err:
        return _page(incident_id, 409, comment=comment, error=_("无法关闭：%(reason)s", reason=err.message))
    flash(_("异常已关闭（未重新执行）。"), "info")
    return redirect(url_for("incidents.show", incident_id=incident_id))


def _visible(incident_id: int) -> None:
    """404 before acting on an incident the user may not see (NotFound becomes the 404 page)."""
    with current_engine().db.read() as s:
        engine_incidents.incident_view(s, current_user.id, incident_id)
