"""Organisations, people and roles; roll import from .xlsx (/admin). Administrators only.

Every view is ``require_role("admin")``; every change goes through the audited functions of
:mod:`engine.directory` (or :func:`engine.roll.import_roll`) inside one write transaction, so the
audit event commits with the change or not at all. A refused change is shown in the user's
language from its stable ``reason``; nothing is half written.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from engine.directory import (
    CHILD_KINDS,
    ORG_KINDS,
    ROLES,
    DirectoryRefused,
    OrgNode,
    create_org,
    create_user,
    deactivate_user,
    descendants,
    grant_role,
    is_locked,
    join_plain_group,
    leave_plain_group,
    move_org,
    org_tree,
    org_usage,
    placement_problem,
    reactivate_user,
    remove_org,
    rename_org,
    revoke_role,
    set_password_hash,
    unlock_user,
    update_user,
)
from engine.models import GroupMember, Membership, Organisation, User, utcnow
from engine.roll import (
    COLUMNS,
    CREATE,
    ERROR,
    MAX_BYTES,
    MAX_ROWS,
    NAME_CONFLICT,
    UNCHANGED,
    UPDATE,
    Problem,
    RollRejected,
    import_roll,
    parse_roll,
    plan_roll,
    template_workbook,
)
from web import roll_uploads
from web.access import require_role
from web.extension import current_engine
from web.passwords import MIN_LENGTH, hash_password

bp = Blueprint("admin", __name__, url_prefix="/admin")
admin_only = require_role("admin")
PAGE_SIZE = 50
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Why a change was refused, by the stable reason the engine (or this module) gives.
REASONS: dict[str, Any] = {
    "bad_code": _l("组织编码只能使用英文字母、数字或 . _ -，最长 64 位。"),
    "missing_display_name": _l("请填写名称。"),
    "too_long": _l("内容过长（最多 %(limit)s 个字）。"),
    "org_exists": _l("组织编码 %(code)s 已被使用。"),
    "bad_kind": _l("未知的组织类型。"),
    "bad_placement": _l("所选上级组织下不能设立这一类型的组织（例如党小组只能设在党支部下）。"),
    "move_cycle": _l("不能把组织移到它自己或它的下级组织之下。"),
    "org_in_use": _l(
        "该组织仍有 %(children)s 个下级组织、%(members)s 名成员、%(instances)s 个流程实例，不能删除。"
    ),
    "bad_username": _l("用户名须为 3–64 位英文字母、数字或 . _ -。"),
    "username_taken": _l("用户名 %(username)s 已存在。"),
    "bad_email": _l("邮箱格式不正确。"),
    "self_deactivate": _l("不能停用自己的账号。"),
    "bad_role": _l("未知的角色“%(value)s”。"),
    "role_held": _l("该用户在此组织已担任这一角色。"),
    "self_revoke_admin": _l("不能撤销自己唯一的系统管理员角色，否则将无法再管理系统。"),
    "bad_group": _l("小组名称不能为空、首尾不能有空格，最长 64 个字。"),
    "group_is_role": _l("“%(value)s”是角色名称，不能用作小组名称。"),
    "group_held": _l("该用户已在此小组中。"),
    "group_missing": _l("该用户不在此小组中。"),
    "password_short": _l("密码至少需要 %(limit)s 个字符。"),
    "password_mismatch": _l("两次输入的密码不一致。"),
    "missing_org_for_role": _l("授予角色时请同时选择组织和角色。"),
    "changed_meanwhile": _l("数据已被他人同时修改，请刷新后重试。"),
    # the roll as a whole
    "no_file": _l("请选择要上传的 .xlsx 文件。"),
    "not_xlsx": _l("只接受 Excel 工作簿（.xlsx）文件。"),
    "file_too_large": _l("文件过大：最多 %(limit_mb)s MB。"),
    "unreadable": _l("无法读取该文件，请确认它是未加密的 Excel 工作簿。"),
    "empty": _l("花名册中没有数据行。"),
    "too_many_rows": _l("花名册行数过多：一次最多导入 %(limit)s 行，请分批导入。"),
    "duplicate_column": _l("有两列的标题都是“%(header)s”。"),
    "missing_columns": _l("缺少必填列：%(columns)s。"),
    "no_header": _l("没有找到标题行（用户名、姓名、组织编码、角色）。请使用导入模板。"),
    "upload_missing": _l("找不到这次上传的文件，请重新上传。"),
    "upload_expired": _l("预览已超过一小时失效，请重新上传文件。"),
    "upload_tampered": _l("上传的文件在预览后被改动，已拒绝导入。请重新上传。"),
    # one row of the roll
    "missing": _l("必填，不能为空。"),
    "duplicate_username": _l("用户名在文件中重复出现（第 %(rows)s 行）。"),
    "unknown_org": _l("没有编码为“%(value)s”的组织。"),
    "username_case": _l("系统中已有仅大小写不同的用户 %(existing)s。"),
    "user_inactive": _l("该用户已停用，请先在用户页面重新启用。"),
}
STATUS_LABELS = {
    CREATE: _l("新建"),
    UPDATE: _l("补充"),
    UNCHANGED: _l("无变化"),
    NAME_CONFLICT: _l("姓名不同"),
    ERROR: _l("有错误"),
}
COLUMN_LABELS = {"username": _l("用户名"), "display_name": _l("姓名"), "org": _l("组织编码"),
                 "role": _l("角色"), "groups": _l("小组"), "email": _l("邮箱")}  # fmt: skip


class _Params(dict[str, Any]):
    """Message values; a value the message wants but the refusal did not give shows as '?', never a 500."""

    def __missing__(self, key: str) -> str:
        return "?"


def explain(reason: str, params: dict[str, Any] | None = None) -> str:
    message = REASONS.get(reason)
    if message is None:
        return _("无法完成操作。")
    return str(message) % _Params(params or {})


def explain_problem(problem: Problem) -> str:
    text = explain(problem.reason, problem.params)
    return f"{COLUMN_LABELS[problem.column]}：{text}" if problem.column in COLUMN_LABELS else text


def _labels() -> dict[str, Any]:
    """Role and kind names for templates, in the user's language."""
    return {
        "role_labels": {key: _(label) for key, label in ROLES.items()},
        "kind_labels": {key: _(label) for key, label in ORG_KINDS.items()},
    }


def _change(apply: Callable[[Session], None], done: str) -> bool:
    """Run one audited change in its own transaction; flash what happened or why it was refused."""
    try:
        with current_engine().db.write() as s:
            apply(s)
    except DirectoryRefused as err:
        flash(explain(err.reason, err.params), "error")
        return False
    except IntegrityError:  # another administrator made the same change a moment ago
        flash(explain("changed_meanwhile"), "error")
        return False
    flash(done, "info")
    return True


def _actor() -> str:
    return current_user.username


def _get(s: Session, model: type, ident: int) -> Any:
    row = s.get(model, ident)
    if row is None:
        abort(404)
    return row


def _flat(tree: list[OrgNode], depth: int = 0) -> list[tuple[OrgNode, int]]:
    """The tree in display order with each node's depth, for indented <select> options."""
    out: list[tuple[OrgNode, int]] = []
    for node in tree:
        out.append((node, depth))
        out += _flat(node.children, depth + 1)
    return out


# --- organisations ---------------------------------------------------------------------------------


@bp.get("/")
@admin_only
def index() -> Response:
    return redirect(url_for(".orgs"))


@bp.get("/orgs")
@admin_only
def orgs() -> str:
    return _orgs_page({}, None)


def _orgs_page(form: dict[str, str], error: str | None) -> str:
    with current_engine().db.read() as s:
        tree = org_tree(s)
    return render_template(
        "admin/orgs.html",
        tree=tree,
        flat=_flat(tree),
        child_kinds=CHILD_KINDS,
        form=form,
        error=error,
        **_labels(),
    )


@bp.post("/orgs")
@admin_only
def add_org() -> str | Response | tuple[str, int]:
    form = {k: request.form.get(k, "").strip() for k in ("code", "name", "parent", "kind")}
    try:
        with current_engine().db.write() as s:
            parent = _get(s, Organisation, int(form["parent"])) if form["parent"].isdigit() else None
            org = create_org(s, _actor(), form["code"], form["name"], parent, form["kind"])
            org_id = org.id
    except DirectoryRefused as err:
        return _orgs_page(form, explain(err.reason, err.params)), 422
    except IntegrityError:
        return _orgs_page(form, explain("changed_meanwhile")), 409
    flash(_("已添加组织 %(name)s。", name=form["name"]), "info")
    return redirect(url_for(".org", org_id=org_id))


@bp.get("/orgs/<int:org_id>")
@admin_only
def org(org_id: int) -> str:
    with current_engine().db.read() as s:
        organisation = _get(s, Organisation, org_id)
        parent = s.get(Organisation, organisation.parent_id) if organisation.parent_id else None
        children = s.scalars(
            select(Organisation).where(Organisation.parent_id == org_id).order_by(Organisation.code)
        ).all()
        members = s.execute(
            select(User, Membership)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.org_id == org_id)
            .order_by(User.username, Membership.role)
        ).all()
        usage = org_usage(s, org_id)
        below = descendants(s, org_id)
        parents = [
            (node, depth)
            for node, depth in _flat(org_tree(s))
            if node.id not in below and placement_problem(node.kind, organisation.kind) is None
        ]
    return render_template(
        "admin/org.html",
        parents=parents,
        org=organisation,
        parent=parent,
        children=children,
        members=members,
        usage=usage,
        **_labels(),
    )


@bp.post("/orgs/<int:org_id>/rename")
@admin_only
def rename(org_id: int) -> Response:
    name = request.form.get("name", "")
    _change(lambda s: rename_org(s, _actor(), _get(s, Organisation, org_id), name), _("已更名。"))
    return redirect(url_for(".org", org_id=org_id))


@bp.post("/orgs/<int:org_id>/move")
@admin_only
def move(org_id: int) -> Response:
    """Put the organisation under another parent (refused where its kind does not fit, or a cycle)."""
    parent_id = request.form.get("parent_id", "")
    if not parent_id.isdigit() or len(parent_id) > 18:
        abort(400)

    def apply(s: Session) -> None:
        move_org(s, _actor(), _get(s, Organisation, org_id), _get(s, Organisation, int(parent_id)))

    _change(apply, _("已调整上级组织。"))
    return redirect(url_for(".org", org_id=org_id))


@bp.post("/orgs/<int:org_id>/remove")
@admin_only
def remove(org_id: int) -> Response:
    if _change(lambda s: remove_org(s, _actor(), _get(s, Organisation, org_id)), _("已删除组织。")):
        return redirect(url_for(".orgs"))
    return redirect(url_for(".org", org_id=org_id))


# --- people ----------------------------------------------------------------------------------------


@bp.get("/users")
@admin_only
def users() -> str:
    return _users_page({}, None)


def _users_page(form: dict[str, str], error: str | None) -> str:
    q = request.args.get("q", "").strip()[:100]
    status = request.args.get("status", "")
    page = max(1, request.args.get("page", 1, type=int) or 1)
    query = select(User)
    if q:
        query = query.where(
            or_(
                User.username.icontains(q, autoescape=True),
                User.display_name.icontains(q, autoescape=True),
                User.email.icontains(q, autoescape=True),
            )
        )
    if status == "active":
        query = query.where(User.active.is_(True))
    elif status == "inactive":
        query = query.where(User.active.is_(False))
    elif status == "locked":
        query = query.where(User.locked_until > utcnow())
    with current_engine().db.read() as s:
        total = s.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(page, pages)
        people = s.scalars(
            query.order_by(User.username).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
        ).all()
        roles: dict[int, list[tuple[str, str]]] = {}
        rows = s.execute(
            select(Membership.user_id, Organisation.code, Membership.role)
            .join(Organisation, Organisation.id == Membership.org_id)
            .where(Membership.user_id.in_([p.id for p in people]))
            .order_by(Organisation.code, Membership.role)
        )
        for user_id, code, role in rows:
            roles.setdefault(user_id, []).append((code, role))
        flat = _flat(org_tree(s))
    return render_template(
        "admin/users.html",
        people=people,
        roles=roles,
        locked={p.id for p in people if is_locked(p)},
        q=q,
        status=status,
        page=page,
        pages=pages,
        total=total,
        flat=flat,
        form=form,
        error=error,
        **_labels(),
    )


@bp.post("/users")
@admin_only
def add_user() -> Response | tuple[str, int]:
    form = {k: request.form.get(k, "").strip() for k in ("username", "display_name", "email", "org", "role")}
    try:
        if bool(form["org"]) != bool(form["role"]) or (form["org"] and not form["org"].isdigit()):
            raise DirectoryRefused("missing_org_for_role", "choose both an organisation and a role")
        with current_engine().db.write() as s:
            person = create_user(s, _actor(), form["username"], form["display_name"], form["email"])
            if form["org"]:
                grant_role(s, _actor(), person, _get(s, Organisation, int(form["org"])), form["role"])
            user_id = person.id
    except DirectoryRefused as err:
        return _users_page(form, explain(err.reason, err.params)), 422
    except IntegrityError:
        return _users_page(form, explain("changed_meanwhile")), 409
    flash(_("已添加用户 %(username)s。请为其设置初始密码。", username=form["username"]), "info")
    return redirect(url_for(".user", user_id=user_id))


@bp.get("/users/<int:user_id>")
@admin_only
def user(user_id: int) -> str:
    with current_engine().db.read() as s:
        person = _get(s, User, user_id)
        memberships = s.execute(
            select(Membership, Organisation)
            .join(Organisation, Organisation.id == Membership.org_id)
            .where(Membership.user_id == user_id)
            .order_by(Organisation.code, Membership.role)
        ).all()
        groups = s.scalars(
            select(GroupMember.group_name)
            .where(GroupMember.user_id == user_id)
            .order_by(GroupMember.group_name)
        ).all()
        flat = _flat(org_tree(s))
    return render_template(
        "admin/user.html",
        person=person,
        locked=is_locked(person),
        memberships=memberships,
        groups=groups,
        flat=flat,
        min_length=MIN_LENGTH,
        is_self=person.id == current_user.id,
        **_labels(),
    )


def _back(user_id: int) -> Response:
    return redirect(url_for(".user", user_id=user_id))


@bp.post("/users/<int:user_id>/profile")
@admin_only
def profile(user_id: int) -> Response:
    name, email = request.form.get("display_name", ""), request.form.get("email", "")
    _change(lambda s: _ignore(update_user(s, _actor(), _get(s, User, user_id), name, email)), _("已保存。"))
    return _back(user_id)


def _ignore(_value: object) -> None:
    """For lambdas whose change returns something the view does not need."""


@bp.post("/users/<int:user_id>/password")
@admin_only
def password(user_id: int) -> Response:
    first, second = request.form.get("password", ""), request.form.get("password2", "")
    if len(first) < MIN_LENGTH:
        flash(explain("password_short", {"limit": MIN_LENGTH}), "error")
    elif first != second:
        flash(explain("password_mismatch"), "error")
    else:
        hashed = hash_password(first)
        _change(lambda s: set_password_hash(s, _actor(), _get(s, User, user_id), hashed), _("密码已设置。"))
    return _back(user_id)


@bp.post("/users/<int:user_id>/deactivate")
@admin_only
def deactivate(user_id: int) -> Response:
    _change(
        lambda s: deactivate_user(s, _actor(), _get(s, User, user_id)),
        _("已停用该用户，其登录会话随即失效。"),
    )
    return _back(user_id)


@bp.post("/users/<int:user_id>/reactivate")
@admin_only
def reactivate(user_id: int) -> Response:
    _change(lambda s: reactivate_user(s, _actor(), _get(s, User, user_id)), _("已重新启用该用户。"))
    return _back(user_id)


@bp.post("/users/<int:user_id>/unlock")
@admin_only
def unlock(user_id: int) -> Response:
    _change(lambda s: unlock_user(s, _actor(), _get(s, User, user_id)), _("已解除锁定。"))
    return _back(user_id)


@bp.post("/users/<int:user_id>/roles")
@admin_only
def grant(user_id: int) -> Response:
    org_id, role = request.form.get("org", ""), request.form.get("role", "")

    def apply(s: Session) -> None:
        person = _get(s, User, user_id)
        if not org_id.isdigit() or not role:
            raise DirectoryRefused("missing_org_for_role", "choose both an organisation and a role")
        grant_role(s, _actor(), person, _get(s, Organisation, int(org_id)), role)

    _change(apply, _("已授予角色。"))
    return _back(user_id)


@bp.post("/users/<int:user_id>/roles/<int:membership_id>/revoke")
@admin_only
def revoke(user_id: int, membership_id: int) -> Response:
    def apply(s: Session) -> None:
        membership = _get(s, Membership, membership_id)
        if membership.user_id != user_id:
            abort(404)
        revoke_role(s, _actor(), membership)

    _change(apply, _("已撤销角色。"))
    return _back(user_id)


@bp.post("/users/<int:user_id>/groups")
@admin_only
def join(user_id: int) -> Response:
    group = request.form.get("group", "").strip()
    _change(
        lambda s: _ignore(join_plain_group(s, _actor(), _get(s, User, user_id), group)), _("已加入小组。")
    )
    return _back(user_id)


@bp.post("/users/<int:user_id>/groups/leave")
@admin_only
def leave(user_id: int) -> Response:
    group = request.form.get("group", "")
    _change(lambda s: leave_plain_group(s, _actor(), _get(s, User, user_id), group), _("已退出小组。"))
    return _back(user_id)


# --- roll import -----------------------------------------------------------------------------------


def _import_page(error: str | None = None, status: int = 200) -> tuple[str, int]:
    limits = {"rows": MAX_ROWS, "mb": MAX_BYTES // 2**20}
    return render_template("admin/import.html", error=error, limits=limits, columns=COLUMNS), status


@bp.get("/import")
@admin_only
def import_form() -> tuple[str, int]:
    return _import_page()


@bp.post("/import")
@admin_only
def import_preview() -> tuple[str, int]:
    upload = request.files.get("roll")
    if upload is None or not upload.filename:
        return _import_page(explain("no_file"), 422)
    if not upload.filename.lower().endswith(".xlsx"):
        return _import_page(explain("not_xlsx"), 422)
    data = upload.stream.read(MAX_BYTES + 1)
    try:
        parsed = parse_roll(data)
    except RollRejected as err:
        return _import_page(explain(err.reason, err.params), 422)
    stored = roll_uploads.save(current_app.instance_path, current_user.id, upload.filename[:200], data)
    with current_engine().db.read() as s:
        plan = plan_roll(s, parsed)
    return render_template(
        "admin/import_preview.html",
        upload=stored,
        parsed=parsed,
        plan=plan,
        counts={status: plan.count(status) for status in STATUS_LABELS},
        statuses=STATUS_LABELS,
        explain_problem=explain_problem,
        **_labels(),
    ), 200


@bp.post("/import/confirm")
@admin_only
def import_confirm() -> tuple[str, int]:
    token, sha256 = request.form.get("token", ""), request.form.get("sha256", "")
    update_names = request.form.get("on_name_conflict") == "update"
    instance = current_app.instance_path
    try:
        upload, data = roll_uploads.load(instance, token, current_user.id, sha256)
        parsed = parse_roll(data)  # checked again, against the directory as it is now
        with current_engine().db.write() as s:
            report = import_roll(s, _actor(), parsed, filename=upload.filename, update_names=update_names)
    except roll_uploads.UploadUnusable as err:
        return _import_page(explain(err.reason), 409)
    except DirectoryRefused as err:  # RollRejected, or a row refused by a change made meanwhile
        return _import_page(explain(err.reason, err.params), 409)
    except IntegrityError:
        return _import_page(explain("changed_meanwhile"), 409)
    roll_uploads.discard(instance, token)
    return render_template(
        "admin/import_result.html",
        upload=upload,
        report=report,
        explain_problem=explain_problem,
        **_labels(),
    ), 200


@bp.get("/import/template.xlsx")
@admin_only
def import_template() -> Response:
    with current_engine().db.read() as s:
        orgs = s.execute(
            select(Organisation.code, Organisation.name, Organisation.kind).order_by(Organisation.code)
        )
        data = template_workbook([tuple(row) for row in orgs])
    return send_file(BytesIO(data), mimetype=XLSX, as_attachment=True, download_name="花名册模板.xlsx")
