"""In-app notifications: reminders and escalations (/notifications).

Each person sees only their own notices, newest first, and marks them read one at a time or all
at once; a notice links to its task. The rows are written by the worker (engine.notify); this page
only reads them and sets ``read_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select, update
from werkzeug.wrappers import Response

from engine.models import HumanTask, Notification
from web.access import login_required
from web.extension import current_engine

bp = Blueprint("notifications", __name__, url_prefix="/notifications")
PAGE = 50
KINDS = {
    "reminder": _l("即将到期"),
    "overdue": _l("已逾期"),
    "escalation": _l("逾期督办"),
    "incident": _l("异常"),
}


@dataclass
class Row:
    """One notice as the page shows it."""

    id: int
    kind: str
    title: str
    body: str | None
    task_id: int | None
    task_open: bool
    due_at: datetime | None
    created_at: datetime
    read: bool

    @property
    def label(self) -> str:
        return str(KINDS.get(self.kind, self.kind))

    def sentence(self) -> str:
        """What happened, in the reader's language (the stored body is the e-mail's Chinese text)."""
        if self.kind == "reminder":
            return _("待办任务“%(title)s”即将到期，请及时办理。", title=self.title)
        if self.kind == "overdue":
            return _("待办任务“%(title)s”已逾期，请尽快办理。", title=self.title)
        if self.kind == "escalation":
            return _("待办任务“%(title)s”逾期未办，请督促办理。", title=self.title)
        return self.body or self.title


def _before() -> int | None:
    raw = request.args.get("before", "")
    return int(raw) if raw.isdigit() else None


@bp.get("/")
@login_required
def index() -> str:
    before = _before()
    unread_only = request.args.get("unread") == "1"
    query = (
        select(Notification, HumanTask.state, HumanTask.due_at)
        .outerjoin(HumanTask, HumanTask.id == Notification.task_id)
        .where(Notification.user_id == current_user.id)
        .order_by(Notification.id.desc())
        .limit(PAGE + 1)
    )
    if before is not None:
        query = query.where(Notification.id < before)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    with current_engine().db.read() as s:
        found = s.execute(query).all()
    rows = [
        Row(
            n.id,
            n.kind,
            n.title,
            n.body,
            n.task_id,
            state == "open",
            due,
            n.created_at,
            n.read_at is not None,
        )
        for n, state, due in found[:PAGE]
    ]
    more = rows[-1].id if len(found) > PAGE else None
    return render_template("notifications/index.html", rows=rows, more=more, unread_only=unread_only)


@bp.post("/<int:notification_id>/read")
@login_required
def read_one(notification_id: int) -> Response:
    """Mark one of my notices read; ``open=1`` then goes on to its task."""
    with current_engine().db.write() as s:
        note = s.get(Notification, notification_id)
        if note is None or note.user_id != current_user.id:
            abort(404)
        if note.read_at is None:
            note.read_at = datetime.now(UTC)
        task_id = note.task_id
    if request.form.get("open") == "1" and task_id is not None and "tasks.show" in current_app.view_functions:
        return redirect(url_for("tasks.show", task_id=task_id))
    return redirect(_back())


@bp.post("/read-all")
@login_required
def read_all() -> Response:
    with current_engine().db.write() as s:
        s.execute(
            update(Notification)
            .where(Notification.user_id == current_user.id, Notification.read_at.is_(None))
            .values(read_at=datetime.now(UTC))
        )
    return redirect(_back())


def _back() -> str:
    """Back to the list as it was (only a path of this page: never an open redirect)."""
    kept = {k: v for k in ("before", "unread") if (v := request.form.get(k, "")).isdigit()}
    return url_for("notifications.index", **kept)
