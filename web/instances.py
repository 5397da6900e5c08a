"""Starting processes and viewing instances (/instances): start, the yearly pledge bulk start, the
list, the detail page with its stage progress bar, the BPMN diagram and the audit timeline.

Who sees what is the engine's rule (``engine.queries.can_see_instance``; the list asks it in SQL):
an instance of an organisation a user holds a role in or above, or one they started or hold a task
in. Anyone else gets 404, so they cannot learn that an instance exists. ``timeline`` and
``diagram_state`` are shared with the task page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response

from engine import EngineError, control, directory, queries
from engine.errors import Forbidden, NotFound
from engine.models import AuditEvent, Definition, HumanTask, Instance, Membership, Organisation, User
from engine.runtime import may_act
from engine.work import SYSTEM
from web.access import login_required, require_role, signed_in_user
from web.extension import current_engine
from web.formatting import BEIJING, beijing_time

bp = Blueprint("instances", __name__, url_prefix="/instances")

PAGE = 25
TITLE_MAX = 100  # the project application form's title limit, so a start title always fits it
STATUS_LABELS = {
    "running": _l("运行中"),
    "completed": _l("已完成"),
    "failed": _l("异常中止"),
    "terminated": _l("已终止"),
    "suspended": _l("已暂停"),
}

# The pledge cycle is started per member by the branch (bulk start), never one by one.
PLEDGE = "pledge_cycle"
PER_MEMBER = {PLEDGE}
BULK_ROLES = ("branch_secretary", "party_office")
# Quarterly monitoring; reminders and warnings a fortnight after a report falls due.
PLEDGE_TIMING = {"period": "P3M", "quarters": 4, "remind_after": "P15D", "warn_after": "P15D"}
DEFAULT_POST = "党员责任岗"

# Data keys that the start (not a form) puts into an instance, for the data section's labels.
START_LABELS = {
    "title": _l("标题"),
    "year": _l("年度"),
    "member": _l("党员账号"),
    "member_name": _l("党员"),
    "post": _l("责任岗位"),
    "peers": _l("互评党员"),
}

ACTION_LABELS = {
    "instance.started": _l("发起流程"),
    "instance.completed": _l("流程结束"),
    "task.created": _l("生成待办"),
    "task.completed": _l("提交办理"),
    "task.cancelled": _l("待办取消"),
    "task.claimed": _l("认领任务"),
    "task.unclaimed": _l("释放任务"),
    "task.reminder": _l("到期提醒"),
    "task.escalated": _l("超时督办"),
    "timer.scheduled": _l("设置定时"),
    "timer.fired": _l("定时触发"),
    "timer.skipped": _l("定时跳过"),
    "message.delivered": _l("收到消息"),
    "engine.steps": _l("自动步骤"),
    "incident.raised": _l("发生异常"),
    "incident.retried": _l("异常重试"),
}
# Bookkeeping events: kept in the timeline (执行必记录) but shown quietly.
MINOR_ACTIONS = {"engine.steps", "timer.scheduled", "task.created"}


# --- shared with the task page --------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    seq: int
    when: str  # Beijing time, for people
    at: datetime
    actor: str
    actor_name: str
    action: str
    label: str
    detail: str
    minor: bool


def timeline(s: Session, instance_id: int, limit: int = 200) -> list[TimelineEvent]:
    """The instance's audit events, newest first, ready to show (read off ``ix_audit_instance``).

    The caller has already checked that the user may see the instance.
    """
    rows = list(
        s.execute(
            select(AuditEvent.seq, AuditEvent.at, AuditEvent.actor, AuditEvent.action, AuditEvent.payload)
            .where(AuditEvent.instance_id == instance_id)
            .order_by(AuditEvent.seq.desc())
            .limit(limit)
        )
    )
    people = select(User.username, User.display_name).where(User.username.in_({r.actor for r in rows}))
    names = {username: display for username, display in s.execute(people)}
    names[SYSTEM] = _("系统")
    keys = {r.payload.get("process") for r in rows if r.action == "instance.started" and r.payload}
    versions = select(Definition.process_key, Definition.name).where(Definition.process_key.in_(keys))
    processes = {key: name for key, name in s.execute(versions.order_by(Definition.version))}  # newest wins
    return [
        TimelineEvent(
            seq=r.seq,
            when=beijing_time(r.at),
            at=r.at,
            actor=r.actor,
            actor_name=names.get(r.actor, r.actor),
            action=r.action,
            label=str(ACTION_LABELS.get(r.action, r.action)),
            detail=_detail(r.action, r.payload or {}, processes),
            minor=r.action in MINOR_ACTIONS,
        )
        for r in rows
    ]


def _detail(action: str, payload: dict[str, Any], processes: dict[str, str]) -> str:
    if action == "instance.started":
        key, version = payload.get("process", ""), payload.get("version", "")
        return _("%(process)s 第 %(version)s 版", process=_(processes.get(key, key)), version=version)
    if action == "incident.raised":
        return str(payload.get("message") or payload.get("kind") or "")[:200]
    if action == "message.delivered":
        return str(payload.get("name") or "")
    return str(payload.get("title") or "")


def diagram_state(s: Session, instance_id: int) -> tuple[list[str], list[str]]:
    """BPMN element ids to highlight: (open tasks, completed tasks), from the human-task projection."""
    rows = s.execute(
        select(HumanTask.task_spec, HumanTask.state)
        .where(HumanTask.instance_id == instance_id, HumanTask.state.in_(("open", "completed")))
        .distinct()
    )
    active: set[str] = set()
    completed: set[str] = set()
    for spec, state in rows:
        (active if state == "open" else completed).add(spec)
    return sorted(active), sorted(completed - active)


def task_url(task_id: int) -> str | None:
    """A link to a task's page, if the task pages are there."""
    if "tasks.show" not in current_app.view_functions:
        return None
    try:
        return url_for("tasks.show", task_id=task_id)
    except BuildError:  # the task page names its argument differently: its path is still /tasks/<id>
        return f"/tasks/{task_id}"


# --- progress bar ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    state: str  # done|current|todo|skipped


def progress(stages: list[str], status: str, current: str | None, open_stages: set[str]) -> list[Step]:
    """The stage bar: stages with open work (parallel stages can both be open) are current.

    Stages before the furthest current one are done; after it, still to come, or never reached
    (skipped) once the instance has ended.
    """
    if status in ("completed", "terminated"):
        reached = stages.index(current) if current in stages else -1
        return [Step(name, "done" if i <= reached else "skipped") for i, name in enumerate(stages)]
    active = {stage for stage in (open_stages | {current or ""}) if stage in stages}
    furthest = max((stages.index(stage) for stage in active), default=-1)
    return [
        Step(name, "current" if name in active else "done" if i < furthest else "todo")
        for i, name in enumerate(stages)
    ]


# --- data labels ----------------------------------------------------------------------------------


def form_labels(forms: dict[str, dict[str, Any]]) -> tuple[dict[str, str], set[str]]:
    """Field titles by key from every form of the process (first title wins), and every enum value.

    Data is shown with these labels; enum values are translated like form choices.
    """
    labels: dict[str, str] = {}
    enums: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if isinstance(prop, dict) and isinstance(prop.get("title"), str):
                    labels.setdefault(name, prop["title"])
            enums.update(v for v in node.get("enum", ()) if isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for name in sorted(forms):
        walk(forms[name])
    return labels, enums


# --- list -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessChoice:
    key: str
    name: str
    version: int
    definition_id: int


def latest_processes(s: Session) -> list[ProcessChoice]:
    """The newest deployed version of each process (what ``Engine.start`` starts)."""
    rows = s.execute(
        select(Definition.process_key, Definition.name, Definition.version, Definition.id).order_by(
            Definition.process_key, Definition.version.desc()
        )
    )
    latest: dict[str, ProcessChoice] = {}
    for key, name, version, definition_id in rows:
        latest.setdefault(key, ProcessChoice(key, name, version, definition_id))
    return list(latest.values())


def _day(text: str) -> datetime:
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=BEIJING)


def list_filter(args: Any) -> tuple[queries.InstanceFilter, list[str]]:
    """The list's filter from the query string; a bad value is named and ignored, never a 500."""
    f = queries.InstanceFilter(limit=PAGE + 1)
    problems: list[str] = []
    f.process = args.get("process") or None
    f.stage = args.get("stage") or None
    f.text = (args.get("q") or "").strip()[:100] or None
    status = args.get("status") or None
    if status and status not in STATUS_LABELS:
        problems.append(_("状态"))
    else:
        f.status = status
    for name, label in (("org", _("组织")), ("before", _("分页"))):
        value = args.get(name) or ""
        if value and not value.isdigit():
            problems.append(label)
        elif value:
            setattr(f, "org_id" if name == "org" else "before_id", int(value))
    starts: list[datetime] = []
    ends: list[datetime] = []
    year = args.get("year") or ""
    if year:
        if year.isdigit() and 2000 <= int(year) <= 2100:
            starts.append(datetime(int(year), 1, 1, tzinfo=BEIJING))
            ends.append(datetime(int(year) + 1, 1, 1, tzinfo=BEIJING))
        else:
            problems.append(_("年度"))
    for name, label, into, shift in (
        ("from", _("开始日期"), starts, 0),
        ("to", _("截止日期"), ends, 1),
    ):
        value = args.get(name) or ""
        if value:
            try:
                into.append(_day(value) + timedelta(days=shift))
            except ValueError:
                problems.append(label)
    f.started_from = max(starts) if starts else None
    f.started_before = min(ends) if ends else None
    return f, problems


@bp.get("/")
@login_required
def index() -> str:
    f, problems = list_filter(request.args)
    with current_engine().db.read() as s:
        rows = queries.instance_list(s, current_user.id, f)
        processes = latest_processes(s)
        stage_groups = [
            (p, queries.definition_diagram(s, p.definition_id).stages)
            for p in processes
            if not f.process or p.key == f.process
        ]
        orgs = queries.visible_orgs(s, current_user.id)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    kept = {k: v for k, v in request.args.items() if k != "before" and v}
    return render_template(
        "instances/index.html",
        rows=rows,
        next_url=url_for("instances.index", **kept, before=rows[-1].id) if more else None,
        first_url=url_for("instances.index", **kept) if f.before_id else None,
        args=request.args,
        problems=problems,
        processes=processes,
        stage_groups=stage_groups,
        orgs=orgs,
        status_labels=STATUS_LABELS,
        may_start=bool(orgs),
    )


# --- start ----------------------------------------------------------------------------------------


def bulk_orgs(s: Session, user_id: int) -> list[Organisation]:
    """Organisations with party members where the user may launch the year's pledge cycles.

    A branch secretary for their branch, the party office for the organisations below it.
    """
    roots = select(Membership.org_id).where(Membership.user_id == user_id, Membership.role.in_(BULK_ROLES))
    with_members = select(Membership.org_id).where(Membership.role == "party_member")
    query = select(Organisation).where(
        Organisation.id.in_(queries.org_subtree(roots, "bulk_orgs")), Organisation.id.in_(with_members)
    )
    return list(s.execute(query.order_by(Organisation.code)).scalars())


def this_year() -> int:
    return datetime.now(BEIJING).year


@bp.route("/new", methods=["GET", "POST"])
@login_required
def start() -> Any:
    """Start the newest version of a process for an organisation, then go to the first task if it is mine."""
    engine = current_engine()
    with engine.db.read() as s:
        processes = [p for p in latest_processes(s) if p.key not in PER_MEMBER]
        pledge = next((p for p in latest_processes(s) if p.key == PLEDGE), None)
        orgs = queries.visible_orgs(s, current_user.id)
        pledge_orgs = bulk_orgs(s, current_user.id) if pledge else []
    form = {"process": request.values.get("process", ""), "org": request.values.get("org", ""), "title": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form["title"] = (request.form.get("title") or "").strip()
        if form["process"] not in {p.key for p in processes}:
            errors["process"] = _("请选择要发起的流程")
        if not form["org"].isdigit():
            errors["org"] = _("请选择组织")
        if not form["title"]:
            errors["title"] = _("请填写标题")
        elif len(form["title"]) > TITLE_MAX:
            errors["title"] = _("标题不能超过 %(n)s 个字", n=TITLE_MAX)
        if not errors:
            try:
                instance = engine.start(
                    form["process"], current_user.username, int(form["org"]), {"title": form["title"]}
                )
            except (Forbidden, NotFound):
                raise  # 403 / 404 pages: the engine refused the organisation
            except EngineError as err:
                errors["form"] = err.message
            else:
                flash(_("已发起：%(title)s", title=form["title"]), "success")
                return redirect(_after_start(instance.id))
    status = 400 if errors else 200
    page = render_template(
        "instances/new.html",
        processes=processes,
        orgs=orgs,
        form=form,
        errors=errors,
        pledge=pledge,
        pledge_orgs=pledge_orgs,
        year=this_year(),
    )
    return page, status


def _after_start(instance_id: int) -> str:
    """The starter's first task of the new instance, else the instance page."""
    with current_engine().db.read() as s:
        user = signed_in_user(s)
        rows = s.execute(
            select(HumanTask)
            .where(HumanTask.instance_id == instance_id, HumanTask.state == "open")
            .order_by(HumanTask.id)
        ).scalars()
        mine = next((row for row in rows if may_act(s, row, user)), None)
    link = task_url(mine.id) if mine is not None else None
    return link or url_for("instances.show", instance_id=instance_id)


@bp.post("/pledge-cycle")
@require_role(*BULK_ROLES)
def pledge_cycle() -> Response:
    """Launch the year's pledge cycle for every member of a branch; running it again starts nothing twice."""
    engine = current_engine()
    org_text, year_text = request.form.get("org", ""), request.form.get("year", "")
    if not org_text.isdigit():
        flash(_("请选择支部"), "error")
        return redirect(url_for("instances.start"))
    if not year_text.isdigit() or abs(int(year_text) - this_year()) > 1:
        flash(_("年度只能是今年、去年或明年"), "error")
        return redirect(url_for("instances.start"))
    year = int(year_text)
    with engine.db.read() as s:
        org = s.get(Organisation, int(org_text))
        if org is None or not directory.sees_org(s, current_user.id, org.id):
            abort(404)
        if not directory.holds_role_above(s, current_user.id, org.id, BULK_ROLES):
            abort(403)
        posts = _last_posts(s, org.id, year)
    code, name = org.code, org.name

    def own(username: str, display_name: str, everyone: list[str]) -> dict[str, Any]:
        return {
            "title": f"{year} 年党员承诺践诺 · {display_name}",
            "post": posts.get(username, DEFAULT_POST),
            "peers": [u for u in everyone if u != username],
        }

    try:
        shared = {"year": year, **PLEDGE_TIMING}
        results = engine.start_for_members(
            PLEDGE, current_user.username, code, f"pledge:{year}", shared, data_for=own
        )
    except NotFound:
        flash(_("尚未部署党员承诺践诺流程，请联系流程设计人员。"), "error")
        return redirect(url_for("instances.start"))
    except EngineError as err:
        flash(_("启动中断：%(message)s。已启动的不会重复，可再次执行。", message=err.message), "error")
        return redirect(url_for("instances.start"))
    started = sum(1 for _u, _i, created in results if created)
    flash(
        _(
            "%(org)s %(year)s 年承诺践诺：新启动 %(started)s 人，已在进行 %(running)s 人。",
            org=name,
            year=year,
            started=started,
            running=len(results) - started,
        ),
        "success",
    )
    return redirect(url_for("instances.index", process=PLEDGE, org=org_text, year=year))


def _last_posts(s: Session, org_id: int, year: int) -> dict[str, str]:
    """Each member's responsibility post from last year's cycle in this branch: the post carries over."""
    prefix = f"pledge:{year - 1}:"
    rows = s.execute(
        select(Instance.business_key, Instance.data).where(
            Instance.process_key == PLEDGE,
            Instance.org_id == org_id,
            Instance.business_key.startswith(prefix, autoescape=True),
        )
    )
    out: dict[str, str] = {}
    for key, data in rows:
        post = (data or {}).get("post")
        if isinstance(post, str) and post:
            out[key.removeprefix(prefix)] = post
    return out


# --- detail ---------------------------------------------------------------------------------------


def visible_instance(s: Session, instance_id: int) -> Instance:
    """The instance, if the signed-in user may see it; 404 otherwise (never say it exists)."""
    instance = s.get(Instance, instance_id)
    if instance is None or not queries.can_see_instance(s, signed_in_user(s), instance):
        abort(404)
    return instance


@dataclass(frozen=True)
class OpenTask:
    id: int
    title: str
    stage: str | None
    who: str
    due_at: datetime | None
    url: str | None


def _who(s: Session, row: HumanTask) -> str:
    """Who a task waits for: its assignee, else the role in its organisation, else the group."""
    if row.assignee_id is not None:
        user = s.get(User, row.assignee_id)
        return user.display_name if user else ""
    pool = directory.read_key(row.candidate_key)
    if isinstance(pool, tuple):
        org = s.get(Organisation, pool[0])
        return f"{org.name if org else ''} · {_(directory.ROLES.get(pool[1], pool[1]))}"
    return pool or ""


@bp.get("/<int:instance_id>")
@login_required
def show(instance_id: int) -> Response:
    engine = current_engine()
    with engine.db.read() as s:
        instance = visible_instance(s, instance_id)
        view = queries.instance_view(s, instance_id)
        definition = s.get(Definition, instance.definition_id)
        diagram = queries.definition_diagram(s, definition.id)
        labels, enums = form_labels(engine.compiled(definition).forms)
        starter = s.get(User, instance.started_by_id)
        org = s.get(Organisation, instance.org_id)
        tasks = [
            OpenTask(t.id, t.title, t.stage, _who(s, t), t.due_at, task_url(t.id)) for t in view.open_tasks
        ]
        active, completed = diagram_state(s, instance_id)
        events = timeline(s, instance_id)
        page = render_template(
            "instances/show.html",
            instance=instance,
            view=view,
            definition=definition,
            org=org,
            starter=starter,
            steps=progress(diagram.stages, view.status, view.stage, {t.stage for t in tasks if t.stage}),
            labels={**{k: str(v) for k, v in START_LABELS.items()}, **labels},
            enums=enums,
            tasks=tasks,
            status_labels=STATUS_LABELS,
            instance_id=instance_id,
            active=active,
            completed=completed,
            events=events,
            may_supervise=control.may_supervise(s, signed_in_user(s).id, instance.org_id),
        )
    return make_response(page)


@bp.get("/<int:instance_id>/diagram.bpmn")
@login_required
def diagram_xml(instance_id: int) -> Response:
    """The deployed BPMN of the instance's definition version, for the diagram viewer."""
    with current_engine().db.read() as s:
        instance = visible_instance(s, instance_id)
        diagram = queries.definition_diagram(s, instance.definition_id)
    response = make_response(diagram.bpmn)
    response.mimetype = "application/xml"
    response.headers["Cache-Control"] = "private, max-age=300"
    return response
