"""A task page (/tasks/<id>): its form, instructions, diagram and history; POST submits it.

Who sees it: a person who may act on the task (its assignee, or a candidate while it is unclaimed)
gets the form; a person who may see the instance gets a read-only view (a completed task shows who
completed it and what they submitted); everyone else gets 404. The engine checks again on submit.

A submission is read back into typed JSON (``web.formrender``), checked with ``engine.forms`` and
completed with the instance revision the page was drawn at. A page that went stale meanwhile is
redrawn with the user's input and a message (409); a task someone else completed meanwhile shows
who did (409). Invalid input is redrawn with messages beside each field (422).

Attachments (``web.attachments``): uploaded files are stored only once the rest of the form is
valid, then completed with the task. If the engine then refuses (stale page, a process error),
the stored files are kept and offered again on the redrawn form, so nothing is uploaded twice;
if the task is gone (completed or taken by someone else) they are discarded, audited, so no
stored file is left that no submission refers to. A form that fails validation stores nothing:
the user chooses the files again (browsers cannot refill a file input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from engine import EngineError, control, forms
from engine.directory import user_keys
from engine.errors import Conflict, Forbidden, InvalidState, ValidationFailed
from engine.models import AuditEvent, Definition, HumanTask, Instance, Organisation, User
from engine.queries import can_see_instance
from engine.runtime import may_act
from web import attachments, formrender, instances
from web.access import login_required, signed_in_user
from web.extension import current_engine

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
bp.add_url_rule("/attachments/<int:attachment_id>", "attachment", attachments.download)

for _name, _helper in {
    "field_kind": formrender.field_kind,
    "choice_label": formrender.choice_label,
    "row_count": formrender.row_count,
    "max_rows": formrender.max_rows,
    "parse_ref": formrender.parse_ref,
}.items():
    bp.add_app_template_global(_helper, _name)


@bp.app_template_global("attachment_accept")
def attachment_accept() -> str:
    return attachments.ACCEPT


@dataclass
class TaskView:
    """Everything the page shows about one task, read in one session."""

    task: HumanTask
    instance: Instance
    process_name: str
    org_name: str
    schema: dict[str, Any] | None
    can_act: bool
    can_claim: bool
    can_unclaim: bool
    assignee_name: str | None
    completed_by_name: str | None
    submitted: dict[str, Any] | None
    process_forms: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    completed_specs: list[str] = field(default_factory=list)
    # Who the task may be handed to, when the user may delegate it (its assignee, or the party office).
    delegate_to: list[tuple[str, str]] | None = None

    @property
    def open(self) -> bool:
        return self.task.state == "open"

    @property
    def active(self) -> list[str]:
        return [self.task.task_spec] if self.open else []


def load(task_id: int) -> TaskView:
    """The task as the current user may see it; 404 when they may neither act on it nor see its instance."""
    engine = current_engine()
    with engine.db.read() as s:
        row = s.get(HumanTask, task_id)
        instance = s.get(Instance, row.instance_id) if row is not None else None
        if row is None or instance is None:
            abort(404)
        user = signed_in_user(s)
        acts = row.state == "open" and may_act(s, row, user)
        if not acts and not can_see_instance(s, user, instance):
            abort(404)
        definition = s.get(Definition, instance.definition_id)
        compiled = engine.compiled(definition)
        org = s.get(Organisation, row.org_id)
        _active, completed = instances.diagram_state(s, instance.id)
        return TaskView(
            task=row,
            instance=instance,
            process_name=definition.name,
            org_name=org.name if org else "",
            schema=compiled.forms.get(row.form) if row.form else None,
            process_forms=compiled.forms,
            can_act=acts,
            can_claim=row.state == "open"
            and row.assignee_id is None
            and row.candidate_key in user_keys(s, user.id),
            can_unclaim=row.state == "open" and row.assignee_id == user.id and row.assignment == "claim",
            assignee_name=_name(s, row.assignee_id),
            completed_by_name=_name(s, row.completed_by_id),
            submitted=_submitted(s, row) if row.state == "completed" else None,
            events=instances.timeline(s, instance.id),
            completed_specs=completed,
            delegate_to=control.delegates(s, row) if control.may_delegate(s, row, user.id) else None,
        )



def _name(s: Session, user_id: int | None) -> str | None:
    user = s.get(User, user_id) if user_id else None
    return user.display_name if user else None


def _submitted(s: Session, row: HumanTask) -> dict[str, Any] | None:
    """What was submitted when the task was completed, from its audit event (the record of it)."""
    payloads = s.execute(
        select(AuditEvent.payload)
        .where(AuditEvent.instance_id == row.instance_id, AuditEvent.action == "task.completed")
        .order_by(AuditEvent.seq.desc())
    ).scalars()
    for payload in payloads:
        if isinstance(payload, dict) and payload.get("task") == row.id:
            data = payload.get("data")
            return data if isinstance(data, dict) else {}
    return None


def page(
    view: TaskView,
    status: int = 200,
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
    rows: dict[str, int] | None = None,
    notice: str | None = None,
    task_data: dict[str, Any] | None = None,
) -> tuple[str, int]:
    """Draw the task page. Someone who may act also sees the task's material: what earlier steps
    entered (the application under review, the comments on returned pledges), from the task's own data."""
    errors = errors or {}
    material: dict[str, Any] = {}
    if view.can_act:
        data = task_data if task_data is not None else current_engine().task_data(view.task.id)
        material = formrender.material(view.process_forms, view.schema, data)
    html = render_template(
        "tasks/show.html",
        view=view,
        values=values or {},
        errors=errors,
        general_errors=formrender.unplaced(view.schema, errors),
        rows=rows or {},
        notice=notice,
        material=material,
        now=current_engine().clock(),
    )
    return html, status


@bp.get("/<int:task_id>")
@login_required
def show(task_id: int) -> tuple[str, int]:
    view = load(task_id)
    if not view.can_act:
        return page(view)
    data = current_engine().task_data(task_id)
    return page(view, values=formrender.initial_values(view.schema, data), task_data=data)


@bp.post("/<int:task_id>")
@login_required
def submit(task_id: int) -> Response | tuple[str, int]:
    view = load(task_id)
    if not view.open:
        return gone(view)
    if not view.can_act:
        abort(403)
    parsed = formrender.parse(view.schema, request.form, request.files)
    if parsed.action:  # add or remove a row: redraw, do not submit
        notice = _("已选择的文件需要重新选择。") if parsed.uploads else None
        values = formrender.drop_pending(parsed.data, parsed.uploads)
        return page(view, values=values, rows=parsed.rows, notice=notice)
    errors = dict(parsed.errors)
    checked = _check_uploads(parsed, errors)
    _check_kept(view.instance.id, parsed, errors)
    try:
        forms.validate(view.schema, parsed.data)
    except ValidationFailed as err:
        errors = formrender.merge_errors(errors, formrender.friendly(view.schema, err.fields))
    if errors:
        notice = _("请重新选择要上传的文件。") if parsed.uploads else None
        values = formrender.drop_pending(parsed.data, parsed.uploads)
        return page(view, 422, values, errors, parsed.rows, notice)
    stored = attachments.store(
        view.instance.id, view.task.id, view.task.task_guid, current_user.username, checked
    )
    for upload, (attachment_id, filename) in zip(parsed.uploads, stored, strict=True):
        formrender.set_at(parsed.data, upload.path, formrender.attachment_ref(attachment_id, filename))
    return _complete(view, parsed, [i for i, _f in stored])


def _check_uploads(parsed: formrender.Parsed, errors: dict[str, list[str]]) -> list[attachments.Checked]:
    checked = []
    for upload in parsed.uploads:
        try:
            checked.append(attachments.check(upload.file))
        except attachments.Refused as refused:
            errors.setdefault(upload.dotted, []).append(str(refused))
    return checked


def _check_kept(instance_id: int, parsed: formrender.Parsed, errors: dict[str, list[str]]) -> None:
    """A kept reference must name a file of this instance: a crafted form cannot borrow another's."""
    own = attachments.belonging(instance_id, [i for _path, i in parsed.kept])
    for path, attachment_id in parsed.kept:
        if attachment_id not in own:
            errors.setdefault(path, []).append(_("附件不存在或不属于此流程，请重新上传"))


def _complete(view: TaskView, parsed: formrender.Parsed, stored: list[int]) -> Response | tuple[str, int]:
    revision = request.form.get("revision", "")
    expected = int(revision) if revision.isdigit() else None
    username = current_user.username
    try:
        current_engine().complete(view.task.id, username, parsed.data, expected_revision=expected)
    except (Conflict, Forbidden) as err:
        fresh = load(view.task.id)
        if not fresh.can_act:
            attachments.discard(stored, username, "task no longer open to this user")
            return gone(fresh)
        if isinstance(err, InvalidState):  # the task is open, but its instance cannot move now
            notice = (
                _("此流程因异常已暂停，需党建工作部处理后才能继续办理。您的填写内容已保留。")
                if fresh.instance.status == "failed"
                else _("此任务当前无法办理：%(reason)s", reason=err.message)
            )
            return page(fresh, 409, parsed.data, {}, parsed.rows, notice)
        notice = _(
            "在您填写期间，此流程已有更新（例如其他人提交了相关任务）。您的填写内容已保留，请核对后再次提交。"
        )
        return page(fresh, 409, parsed.data, {}, parsed.rows, notice)
    except ValidationFailed as err:
        errors = formrender.friendly(view.schema, err.fields)
        return page(view, 422, parsed.data, errors, parsed.rows)
    except EngineError as err:  # the process itself could not take the data (a failing script)
        notice = _("流程未能接受此次提交：%(reason)s", reason=err.message)
        return page(view, 422, parsed.data, {}, parsed.rows, notice)
    flash(_("已提交“%(title)s”。", title=view.task.title), "info")
    return redirect(url_for("inbox.index"))


def gone(view: TaskView) -> tuple[str, int]:
    """409: the task is no longer this user's to complete; say who has it, or who completed it."""
    task = view.task
    if task.state == "completed":
        notice = _("此任务已由 %(who)s 办理完毕，无需再次提交。", who=view.completed_by_name or _("他人"))
    elif task.state != "open":
        notice = _("此任务已取消（流程已走向其他环节），无需再提交。")
    elif task.assignee_id is not None:
        notice = _("此任务已由 %(who)s 认领办理。", who=view.assignee_name or _("他人"))
    else:
        notice = _("您无权办理此任务。")
    return page(view, 409, notice=notice)
