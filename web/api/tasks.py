"""``/tasks``: the caller's inbox, one task with its form, and claim / unclaim / complete.

A task the caller may neither act on nor see the instance of is a 404, as on the task pages, so
ids cannot be probed; one they may see but not act on is the engine's 403. The engine checks
every action again (and alone decides conflicts: already completed, stale revision).
"""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from sqlalchemy.orm import Session, defer
from werkzeug.wrappers import Response

from engine.directory import org_by_code
from engine.errors import NotFound
from engine.models import Definition, HumanTask, Instance, User, utcnow
from engine.queries import SORTS, InboxFilter, can_see_instance, inbox
from engine.runtime import may_act
from web.api import shapes
from web.api.auth import caller
from web.api.errors import json_body, not_found
from web.api.instances import detail
from web.api.params import CURSOR, cursor, limit_param
from web.api.registry import Body, Param, operation
from web.extension import current_engine


@operation(
    "GET",
    "/tasks",
    summary="The caller's inbox: open tasks they may act on",
    tag="tasks",
    query=(
        Param("process", {"type": "string", "maxLength": 128}, "Only this process key."),
        Param("stage", {"type": "string", "maxLength": 64}, "Only tasks at this stage."),
        Param("org", {"type": "string", "maxLength": 64}, "Only this organisation (code)."),
        Param(
            "mine", {"type": "boolean", "default": False}, "Only tasks claimed by or assigned to the caller."
        ),
        Param("overdue", {"type": "boolean", "default": False}, "Only tasks past their due time."),
        Param(
            "sort",
            {"type": "string", "enum": list(SORTS), "default": "id"},
            "id: oldest first; newest; due: soonest due first, undated last; priority: highest first.",
        ),
        CURSOR,
        limit_param(50, 200),
    ),
    responses={200: ("A page of open tasks, in the order asked for", "TaskPage")},
)
def list_tasks(args: dict[str, Any]) -> Response:
    """Assigned to the caller, or unclaimed and offered to a role or group they hold (the inbox's rule)."""
    me = caller()
    with current_engine().db.read() as s:
        org_id = None
        if args["org"]:
            try:
                org_id = org_by_code(s, args["org"]).id
            except NotFound:
                return json_body(shapes.page([], None))
        f = InboxFilter(
            process=args["process"],
            stage=args["stage"],
            org_id=org_id,
            overdue_at=utcnow() if args["overdue"] else None,
            mine_only=args["mine"],
            sort=args["sort"],
            after_id=cursor(args),
            limit=args["limit"] + 1,
        )
        rows, after = shapes.trim(inbox(s, me.user_id, f), args["limit"], lambda r: r.id)
        names = shapes.Names.for_tasks(s, rows)
        return json_body(shapes.page([shapes.task(r, names) for r in rows], after))


def visible_task(s: Session, task_id: int, user_id: int) -> tuple[HumanTask, User, Instance]:
    """The task, if the user may act on it or see its instance; else 404 whether or not it exists."""
    row = s.get(HumanTask, task_id)
    user = s.get(User, user_id)
    found = s.get(Instance, row.instance_id, options=[defer(Instance.state)]) if row else None
    if row is None or user is None or found is None:
        raise not_found(_("任务不存在。"))
    if not (may_act(s, row, user) or can_see_instance(s, user, found)):
        raise not_found(_("任务不存在。"))
    return row, user, found


@operation(
    "GET",
    "/tasks/{task_id}",
    summary="One task, with the JSON Schema of its form",
    tag="tasks",
    responses={200: ("The task", "TaskDetail")},
)
def get_task(task_id: int) -> Response:
    """Open or finished. ``form_schema`` is what /complete validates ``data`` against; ``instance.revision``
    is what to send as ``revision`` to refuse a stale submission."""
    me = caller()
    engine = current_engine()
    with engine.db.read() as s:
        row, _user, found = visible_task(s, task_id, me.user_id)
        schema = None
        if row.form:
            definition = s.get(Definition, found.definition_id)
            assert definition is not None
            schema = engine.compiled(definition).forms.get(row.form)
        names = shapes.Names.for_tasks(s, [row])
        body = {
            **shapes.task(row, names),
            "form_schema": schema,
            "instance": {
                "id": found.id,
                "title": found.title,
                "status": found.status,
                "stage": found.stage,
                "revision": found.revision,
            },
        }
    return json_body(body)


def _task_answer(task_id: int) -> Response:
    with current_engine().db.read() as s:
        row = s.get(HumanTask, task_id)
        assert row is not None
        return json_body(shapes.task(row, shapes.Names.for_tasks(s, [row])))


def _check_visible(task_id: int) -> None:
    with current_engine().db.read() as s:
        visible_task(s, task_id, caller().user_id)


@operation(
    "POST",
    "/tasks/{task_id}/claim",
    summary="Claim a task offered to a role or group the caller holds",
    tag="tasks",
    responses={200: ("Claimed (or already the caller's)", "Task")},
    errors=(403, 409),
)
def claim_task(task_id: int) -> Response:
    """So that no one else works on it. 409 if it is no longer open or someone else claimed it first."""
    _check_visible(task_id)
    current_engine().claim(task_id, caller().username)
    return _task_answer(task_id)


@operation(
    "POST",
    "/tasks/{task_id}/unclaim",
    summary="Give a claimed task back to everyone it was offered to",
    tag="tasks",
    responses={200: ("Released", "Task")},
    errors=(403, 409),
)
def unclaim_task(task_id: int) -> Response:
    """Only the caller's own claim can be released (403 otherwise)."""
    _check_visible(task_id)
    current_engine().unclaim(task_id, caller().username)
    return _task_answer(task_id)


@operation(
    "POST",
    "/tasks/{task_id}/complete",
    summary="Complete a task with its form data",
    tag="tasks",
    body=Body("CompleteTask", required=False, example={"data": {"verdict": "approve", "comment": "同意"}}),
    responses={200: ("Completed: the instance as it is now", "InstanceDetail")},
    errors=(403, 409, 422),
)
def complete_task(task_id: int, body: dict[str, Any]) -> Response:
    """``data`` is validated against the task's form on the server (422 with every field's errors,
    nothing changed). 409 if the task was already completed, or, with ``revision``, if the instance
    changed since."""
    me = caller()
    _check_visible(task_id)
    instance = current_engine().complete(task_id, me.username, body.get("data") or {}, body.get("revision"))
    with current_engine().db.read() as s:
        return json_body(detail(s, instance.id, me.user_id))
