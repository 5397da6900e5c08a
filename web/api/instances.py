"""``/instances``: start one, list the ones you may see, read one, read its audit trail."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from werkzeug.wrappers import Response

from engine.errors import Forbidden
from engine.models import AuditEvent, Definition, Instance, User
from engine.queries import can_see_instance, instance_view
from web.api import shapes
from web.api.auth import caller
from web.api.errors import ApiError, json_body, not_found
from web.api.listing import InstanceFilter, visible_instances
from web.api.params import CURSOR, cursor, limit_param
from web.api.registry import Body, Param, operation
from web.api.schemas import INSTANCE_PROPERTIES
from web.extension import current_engine

STATUS = Param(
    "status", {"type": "string", "enum": INSTANCE_PROPERTIES["status"]["enum"]}, "Only this status."
)


@operation(
    "POST",
    "/instances",
    summary="Start an instance of a process",
    tag="instances",
    body=Body(
        "StartInstance",
        example={"process": "approval", "org": "B1", "data": {"title": "党员先锋岗建设"}},
    ),
    responses={
        201: ("Started", "InstanceDetail"),
        200: ("An instance with this business_key already existed: that one", "InstanceDetail"),
    },
    errors=(403, 404, 409, 422),
)
def start_instance(body: dict[str, Any]) -> Response:
    """Starts the newest (or the given) version for an organisation the caller holds a role in or
    above. With ``business_key`` it is idempotent: a retry answers the instance already started."""
    me = caller()
    engine = current_engine()
    key = body.get("business_key")
    existing = _by_business_key(body["process"], key) if key else None
    if existing is None:
        try:
            started = engine.start(
                body["process"], me.username, body["org"], body.get("data") or {}, key, body.get("version")
            )
        except IntegrityError:  # the same business key, started by someone else this moment
            existing = _by_business_key(body["process"], key) if key else None
            if existing is None:
                raise
        else:
            return _detail(started.id, me.user_id, 201, {"Location": f"/api/v1/instances/{started.id}"})
    with engine.db.read() as s:
        user = s.get(User, me.user_id)
        found = s.get(Instance, existing)
        if user is None or found is None or not can_see_instance(s, user, found):
            raise ApiError(
                409, "conflict", _("此业务键已被其他实例使用。"), {"business_key": ["already used"]}
            )
    return _detail(existing, me.user_id, 200)


def _by_business_key(process: str, key: str) -> int | None:
    with current_engine().db.read() as s:
        return s.execute(
            select(Instance.id).where(Instance.process_key == process, Instance.business_key == key)
        ).scalar_one_or_none()


@operation(
    "GET",
    "/instances",
    summary="List instances the caller may see, newest first",
    tag="instances",
    query=(
        Param("process", {"type": "string", "maxLength": 128}, "Only this process key."),
        STATUS,
        Param("stage", {"type": "string", "maxLength": 64}, "Only instances at this stage."),
        Param("org", {"type": "string", "maxLength": 64}, "Only this organisation (code)."),
        Param("business_key", {"type": "string", "maxLength": 200}, "Only this business key."),
        CURSOR,
        limit_param(50, 200),
    ),
    responses={200: ("A page of instances", "InstancePage")},
)
def list_instances(args: dict[str, Any]) -> Response:
    """Instances the caller started, was assigned a task of, or whose organisation (or one above it)
    the caller holds a role in: the rule of the instance pages."""
    me = caller()
    f = InstanceFilter(
        process=args["process"],
        status=args["status"],
        stage=args["stage"],
        org=args["org"],
        business_key=args["business_key"],
        before_id=cursor(args),
        limit=args["limit"] + 1,
    )
    with current_engine().db.read() as s:
        rows, after = shapes.trim(visible_instances(s, me.user_id, f), args["limit"], lambda r: r.id)
        versions = _versions(s, {r.definition_id for r in rows})
        names = shapes.Names(s, [r.started_by_id for r in rows], [r.org_id for r in rows])
        items = [shapes.instance(r, versions[r.definition_id], names) for r in rows]
    return json_body(shapes.page(items, after))


def _versions(s: Session, definition_ids: set[int]) -> dict[int, int]:
    if not definition_ids:
        return {}
    found = s.execute(select(Definition.id, Definition.version).where(Definition.id.in_(definition_ids)))
    return dict(found.all())


@operation(
    "GET",
    "/instances/{instance_id}",
    summary="An instance: status, stage, data, open tasks, incidents",
    tag="instances",
    responses={200: ("The instance", "InstanceDetail")},
)
def get_instance(instance_id: int) -> Response:
    """404 also when the caller may not see it, so its existence is not given away."""
    return _detail(instance_id, caller().user_id, 200)


def detail(s: Session, instance_id: int, user_id: int) -> dict[str, Any]:
    """The InstanceDetail of an instance the user may see (engine.queries.instance_view decides)."""
    user = s.get(User, user_id)
    if user is None:
        raise not_found(_("实例不存在。"))
    try:
        view = instance_view(s, instance_id, user)
    except Forbidden as err:
        raise not_found(_("实例不存在。")) from err
    row = s.get(Instance, instance_id)
    assert row is not None  # instance_view found it in this session
    names = shapes.Names.for_tasks(s, view.open_tasks, users=[row.started_by_id], orgs=[row.org_id])
    return {
        **shapes.instance(row, _versions(s, {row.definition_id})[row.definition_id], names),
        "data": view.data,
        "open_tasks": [shapes.task(t, names) for t in view.open_tasks],
        "incidents": [shapes.incident(i) for i in view.incidents],
    }


def _detail(instance_id: int, user_id: int, status: int, headers: dict[str, str] | None = None) -> Response:
    with current_engine().db.read() as s:
        return json_body(detail(s, instance_id, user_id), status, headers)


@operation(
    "GET",
    "/instances/{instance_id}/audit",
    summary="The instance's audit trail, oldest first",
    tag="audit",
    query=(CURSOR, limit_param(100, 500)),
    responses={200: ("A page of audit events", "AuditPage")},
)
def instance_audit(instance_id: int, args: dict[str, Any]) -> Response:
    """Every recorded change of the instance with who made it; visible to whoever sees the instance."""
    me = caller()
    with current_engine().db.read() as s:
        user = s.get(User, me.user_id)
        found = s.get(Instance, instance_id, options=[defer(Instance.state)])
        if user is None or found is None or not can_see_instance(s, user, found):
            raise not_found(_("实例不存在。"))
        query = select(AuditEvent).where(AuditEvent.instance_id == instance_id)
        after = cursor(args)
        if after:
            query = query.where(AuditEvent.seq > after)
        found = s.execute(query.order_by(AuditEvent.seq).limit(args["limit"] + 1)).scalars().all()
        rows, after = shapes.trim(found, args["limit"], lambda r: r.seq)
        return json_body(shapes.page([shapes.audit_event(r) for r in rows], after))
