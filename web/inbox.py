"""The task inbox (/inbox): what I must do, what I may claim, what I have claimed.

It reads only the human-task projection (``engine.queries.inbox``: one indexed query per source,
keyset paging), never a workflow. Claiming goes through the engine (``Engine.claim``/``unclaim``),
which refuses a task someone else took a moment ago. Every action is a plain form POST that
redirects back to the same filtered page; with htmx, claiming or releasing one row swaps just that
row. Bulk claim is one POST of the ticked rows; each claim stands on its own, so one taken by
someone else meanwhile does not undo the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from engine import EngineError, queries
from engine.directory import user_keys
from engine.errors import Conflict, Forbidden
from engine.models import Definition, HumanTask, Instance, Organisation
from engine.queries import can_see_instance
from web.access import login_required, signed_in_user
from web.extension import current_engine

bp = Blueprint("inbox", __name__, url_prefix="/inbox")

PAGE = 25
COUNT_CAP = 100
MAX_BULK = 100

# Tabs: which of my sources a page lists (see engine.queries.InboxFilter).
VIEWS: dict[str, tuple[Any, dict[str, bool]]] = {
    "all": (_l("全部待办"), {}),
    "mine": (_l("分配给我"), {"mine_only": True}),
    "pool": (_l("可认领"), {"unclaimed_only": True}),
    "claimed": (_l("我已认领"), {"claimed_only": True}),
}
SORTS: dict[str, Any] = {
    "due": _l("按期限"),
    "priority": _l("按优先级"),
    "newest": _l("最新到达"),
    "id": _l("最早到达"),
}
DUE: dict[str, tuple[Any, timedelta]] = {
    "overdue": (_l("已逾期"), timedelta(0)),
    "week": (_l("7 天内到期"), timedelta(days=7)),
}


@dataclass(frozen=True)
class Choices:
    """The inbox's query string, each value checked: anything unknown falls back to the default."""

    view: str = "all"
    process: str = ""
    stage: str = ""
    org: int | None = None
    due: str = ""
    sort: str = "due"
    after: int | None = None

    @classmethod
    def from_args(cls, args: Any) -> Choices:
        def number(name: str) -> int | None:
            raw = args.get(name, "")
            return int(raw) if raw.isdigit() and len(raw) < 19 else None

        view, sort, due = args.get("view", "all"), args.get("sort", "due"), args.get("due", "")
        return cls(
            view=view if view in VIEWS else "all",
            process=args.get("process", "")[:128],
            stage=args.get("stage", "")[:64],
            org=number("org"),
            due=due if due in DUE else "",
            sort=sort if sort in SORTS else "due",
            after=number("after"),
        )

    def engine_filter(self, now: datetime, limit: int) -> queries.InboxFilter:
        return queries.InboxFilter(
            process=self.process or None,
            stage=self.stage or None,
            org_id=self.org,
            overdue_at=now + DUE[self.due][1] if self.due else None,
            sort=self.sort,
            after_id=self.after,
            limit=limit,
            **VIEWS[self.view][1],
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for a link: these choices with some changed, defaults left out."""
        values = {
            "view": self.view,
            "process": self.process,
            "stage": self.stage,
            "org": self.org,
            "due": self.due,
            "sort": self.sort,
            "after": self.after,
        }
        values.update(changes)
        defaults = {"view": "all", "sort": "due"}
        return {k: v for k, v in values.items() if v not in (None, "") and defaults.get(k) != v}

    @property
    def filtered(self) -> bool:
        return bool(self.process or self.stage or self.org or self.due)


@dataclass(frozen=True)
class Row:
    """One inbox line, with what the current user may do to it."""

    id: int
    instance_id: int
    title: str
    process: str
    stage: str | None
    org: str
    due_at: datetime | None
    overdue: bool
    priority: int
    holding: str  # owner|claimed|candidate|other
    message: str | None = None

    @property
    def can_claim(self) -> bool:
        return self.holding == "candidate"

    @property
    def can_unclaim(self) -> bool:
        return self.holding == "claimed"


def _names(s: Session, process_keys: set[str], org_ids: set[int]) -> tuple[dict[str, str], dict[int, str]]:
    """Process names (the newest version's) and organisation names, for the rows and the filters."""
    processes: dict[str, str] = {}
    if process_keys:
        found = s.execute(
            select(Definition.process_key, Definition.name)
            .where(Definition.process_key.in_(process_keys))
            .order_by(Definition.version)
        )
        processes = {key: name for key, name in found}
    orgs: dict[int, str] = {}
    if org_ids:
        found_orgs = s.execute(select(Organisation.id, Organisation.name).where(Organisation.id.in_(org_ids)))
        orgs = {org_id: name for org_id, name in found_orgs}
    return processes, orgs


def _row(
    task: HumanTask, processes: dict[str, str], orgs: dict[int, str], now: datetime, **extra: Any
) -> Row:
    if task.state != "open":
        holding = "other"
    elif task.assignee_id == current_user.id:
        holding = "claimed" if task.assignment == "claim" else "owner"
    elif task.assignee_id is None:
        holding = "candidate"
    else:
        holding = "other"
    return Row(
        id=task.id,
        instance_id=task.instance_id,
        title=task.title,
        process=processes.get(task.process_key, task.process_key),
        stage=task.stage,
        org=orgs.get(task.org_id, ""),
        due_at=task.due_at,
        overdue=task.due_at is not None and task.due_at < now and task.state == "open",
        priority=task.priority,
        holding=holding,
        **extra,
    )


@bp.get("/")
@login_required
def index() -> str:
    choices = Choices.from_args(request.args)
    engine = current_engine()
    now = engine.clock()
    with engine.db.read() as s:
        tasks = queries.inbox(s, current_user.id, choices.engine_filter(now, PAGE + 1))
        more, tasks = len(tasks) > PAGE, tasks[:PAGE]
        counts = {
            view: queries.inbox_count(s, current_user.id, COUNT_CAP, queries.InboxFilter(**flags))
            for view, (_label, flags) in VIEWS.items()
        }
        facets = queries.inbox_facets(s, current_user.id)
        processes, orgs = _names(
            s,
            {t.process_key for t in tasks} | {p for p, _s, _o in facets},
            {t.org_id for t in tasks} | {o for _p, _s, o in facets},
        )
    rows = [_row(t, processes, orgs, now) for t in tasks]
    return render_template(
        "inbox/index.html",
        rows=rows,
        choices=choices,
        counts=counts,
        count_cap=COUNT_CAP,
        views=VIEWS,
        sorts=SORTS,
        due_choices=DUE,
        process_choices=sorted({p for p, _s, _o in facets}, key=lambda p: processes.get(p, p)),
        process_names=processes,
        stage_choices=sorted({st for p, st, _o in facets if st and choices.process in ("", p)}),
        org_choices=sorted({o for _p, _s, o in facets}, key=lambda o: orgs.get(o, "")),
        org_names=orgs,
        next_after=rows[-1].id if more and rows else None,
        back=request.full_path.rstrip("?"),
    )


def _back() -> str:
    """Where to return after an action: a path of the inbox or a task page on this site, else the inbox."""
    target = request.form.get("next", "")
    parts = urlsplit(target)
    local = not parts.scheme and not parts.netloc and target.startswith(("/inbox", "/tasks/"))
    return target if local and "\\" not in target else url_for("inbox.index")


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _visible(task_id: int) -> None:
    """404 unless the task is offered to the user, held by them, or of an instance they may see."""
    with current_engine().db.read() as s:
        task = s.get(HumanTask, task_id)
        instance = s.get(Instance, task.instance_id) if task is not None else None
        if task is None or instance is None:
            abort(404)
        user = signed_in_user(s)
        offered = task.candidate_key is not None and task.candidate_key in user_keys(s, user.id)
        if not (offered or task.assignee_id == user.id or can_see_instance(s, user, instance)):
            abort(404)


def _one(task_id: int, claim: bool) -> Response | str:
    """Claim or release one task. Losing a race is normal (a message); trying what one may not is 403."""
    _visible(task_id)
    engine = current_engine()
    message = None
    try:
        if claim:
            engine.claim(task_id, current_user.username)
        else:
            engine.unclaim(task_id, current_user.username)
    except Conflict:
        message = _("此任务刚被他人认领或已办结。")
    except Forbidden:
        abort(403)
    if _htmx():
        return _row_fragment(task_id, message)
    if message:
        flash(message, "warning")
    else:
        flash(_("已认领此任务。") if claim else _("已放弃认领，任务已退回待认领。"), "info")
    return redirect(_back())


def _row_fragment(task_id: int, message: str | None) -> str:
    """The row after an htmx claim or release: redrawn in place (200 even on refusal, so htmx swaps it)."""
    engine = current_engine()
    with engine.db.read() as s:
        task = s.get(HumanTask, task_id)
        if task is None:
            abort(404)
        processes, orgs = _names(s, {task.process_key}, {task.org_id})
    row = _row(task, processes, orgs, engine.clock(), message=message)
    return render_template("inbox/_row.html", row=row, back=request.form.get("next", ""))


@bp.post("/tasks/<int:task_id>/claim")
@login_required
def claim_one(task_id: int) -> Response | str:
    return _one(task_id, claim=True)


@bp.post("/tasks/<int:task_id>/unclaim")
@login_required
def unclaim_one(task_id: int) -> Response | str:
    return _one(task_id, claim=False)


@bp.post("/claim")
@login_required
def claim_many() -> Response:
    """Claim every ticked task; say how many were claimed and how many someone else had taken."""
    ids = [int(v) for v in request.form.getlist("task") if v.isdigit() and len(v) < 19][:MAX_BULK]
    if not ids:
        flash(_("请先勾选要认领的任务。"), "warning")
        return redirect(_back())
    engine = current_engine()
    claimed = failed = 0
    for task_id in dict.fromkeys(ids):
        try:
            engine.claim(task_id, current_user.username)
            claimed += 1
        except EngineError:
            failed += 1
    if claimed:
        flash(ngettext("已认领 %(num)d 项任务。", "已认领 %(num)d 项任务。", claimed), "info")
    if failed:
        refused = "%(num)d 项未能认领（已被他人认领或您无权认领）。"
        flash(ngettext(refused, refused, failed), "warning")
    return redirect(_back())
