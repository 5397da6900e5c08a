"""Supervision from the pages: delegate a task; suspend, resume or terminate an instance.

The engine (engine.control) decides who may and records each action in the audit trail; these
views only check first that the user may see the thing at all (404 otherwise, never saying it
exists), turn a refusal of the *requester* into 403, and turn everything a person can correct (a
stale page, a colleague who may not take the task) into a message on the page they came from.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from engine import control
from engine.errors import Conflict, Forbidden, InvalidState, NotFound
from engine.models import HumanTask
from web.access import login_required, signed_in_user
from web.extension import current_engine
from web.instances import visible_instance

bp = Blueprint("supervise", __name__)


def _supervised_instance(instance_id: int) -> None:
    """404 unless the user sees the instance; 403 unless they may supervise it."""
    with current_engine().db.read() as s:
        instance = visible_instance(s, instance_id)
        if not control.may_supervise(s, signed_in_user(s).id, instance.org_id):
            abort(403)


def _instance_action(instance_id: int, verb: str, done: str) -> Response:
    _supervised_instance(instance_id)
    reason = request.form.get("reason", "")
    if verb == "terminate" and (not reason.strip() or request.form.get("confirm") != "yes"):
        flash(_("终止流程须填写原因并勾选确认。"), "warning")
        return redirect(url_for("instances.show", instance_id=instance_id))
    action = getattr(current_engine(), verb)
    try:
        action(instance_id, current_user.username, reason)
    except (InvalidState, Conflict):  # someone else acted first: show the instance as it is now
        flash(_("流程状态已变化，未执行此操作；请查看最新状态。"), "warning")
    else:
        flash(done, "info")
    return redirect(url_for("instances.show", instance_id=instance_id))


@bp.post("/instances/<int:instance_id>/suspend")
@login_required
def suspend(instance_id: int) -> Response:
    return _instance_action(instance_id, "suspend", _("流程已暂停：待办保留，但在恢复前不能办理。"))


@bp.post("/instances/<int:instance_id>/resume")
@login_required
def resume(instance_id: int) -> Response:
    return _instance_action(instance_id, "resume", _("流程已恢复。"))


@bp.post("/instances/<int:instance_id>/terminate")
@login_required
def terminate(instance_id: int) -> Response:
    return _instance_action(instance_id, "terminate", _("流程已终止，待办任务已取消。"))


@bp.post("/tasks/<int:task_id>/delegate")
@login_required
def delegate(task_id: int) -> Response:
    """Hand a task to someone who may act on it: its assignee, or the party office, may."""
    engine = current_engine()
    with engine.db.read() as s:
        row = s.get(HumanTask, task_id)
        if row is None:
            abort(404)
        visible_instance(s, row.instance_id)
        if row.state != "open":
            flash(_("任务已被他人处理或已转交，请查看最新状态。"), "warning")
            return redirect(url_for("tasks.show", task_id=task_id))
        if not control.may_delegate(s, row, signed_in_user(s).id):
            abort(403)
    to = request.form.get("to", "").strip()[:64]
    back = url_for("tasks.show", task_id=task_id)
    try:
        engine.delegate(task_id, current_user.username, to)
    except (NotFound, Forbidden):
        flash(_("不能转交给“%(to)s”：此人不存在或无权办理此任务。", to=to), "warning")
        return redirect(back)
    except (InvalidState, Conflict):
        flash(_("任务已被他人处理或已转交，请查看最新状态。"), "warning")
        return redirect(back)
    flash(_("已将任务转交给 %(to)s。", to=to), "info")
    return redirect(url_for("inbox.index"))
