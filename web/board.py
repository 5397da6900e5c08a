"""The public pledge board (挂牌亮诺) and masses' feedback (群众监督): /board, no sign-in needed.

People reach a post page by scanning the QR code on a post sign, so these pages are public and
phone-first. They render only what ``engine.board`` puts in its public dataclasses. Moderation
(/board/moderate) is for the post's branch secretary or the party office above it.

The rate limit counts per client address as Werkzeug reports it (``request.remote_addr``). Behind
a reverse proxy that is the proxy's address unless QIZHI_PROXIES says how many proxies to trust; a
forwarded header is never trusted otherwise, since any visitor can send one.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.wrappers import Response

from engine import ValidationFailed
from engine import board as model
from engine.directory import org_by_code
from web.access import login_required, require_role, signed_in_user
from web.extension import current_engine
from web.formatting import BEIJING

bp = Blueprint("board", __name__, url_prefix="/board")

FEEDBACK_PER_PAGE = 20
MODERATION_PER_PAGE = 50
FIRST_YEAR, LAST_YEAR = 2000, 2100

QUARTER_LABELS = {
    "reported": _l("已报告"),
    "reported_late": _l("逾期后已报告"),
    "overdue": _l("逾期未报"),
    "open": _l("待报告"),
    "upcoming": _l("未到期"),
}


def _error_text(field: str, code: str) -> str:
    """The reader's-language sentence for one of ``engine.board``'s error codes."""
    if code == "control_characters":
        return _("含有不允许的控制字符，请删除后再提交。")
    if field == "author" and code == "too_long":
        return _("称呼最多 %(n)d 个字。", n=model.AUTHOR_MAX)
    if field == "body" and code == "too_long":
        return _("留言最多 %(n)d 个字。", n=model.BODY_MAX)
    if field == "body" and code in ("too_short", "required"):
        return _("留言至少 %(n)d 个字。", n=model.BODY_MIN)
    if field == "reason" and code == "too_long":
        return _("理由最多 %(n)d 个字。", n=model.REASON_MAX)
    if field == "reason" and code == "required":
        return _("请填写隐藏理由。")
    return _("填写有误，请检查。")


def _errors(err: ValidationFailed) -> dict[str, str]:
    return {field: _error_text(field, codes[0]) for field, codes in err.fields.items() if codes}


def _now() -> datetime:
    return current_engine().clock()


def _year() -> int:
    """The ``year`` query argument, this (Beijing) year by default; 404 for one that cannot be."""
    raw = request.args.get("year", "").strip()
    if not raw:
        return _now().astimezone(BEIJING).year
    if not raw.isdigit() or not FIRST_YEAR <= int(raw) <= LAST_YEAR:
        abort(404)
    return int(raw)


def _page() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 100_000 else 1


# --- public pages --------------------------------------------------------------------------------


@bp.get("")
def index() -> str:
    year = _year()
    with current_engine().db.read() as s:
        years = model.years(s)
        branches = model.branches(s, year)
    if year not in years:
        years = sorted({*years, year}, reverse=True)
    return render_template(
        "board/index.html",
        year=year,
        years=years,
        branches=branches,
        may_moderate=current_user.is_authenticated and current_user.has_role(*model.MODERATOR_ROLES),
    )


@bp.get("/<code>")
def branch(code: str) -> str:
    year = _year()
    with current_engine().db.read() as s:
        org = org_by_code(s, code)
        posts = model.branch_posts(s, org.id, year, _now())
        name = org.name
    return render_template(
        "board/branch.html",
        year=year,
        code=code,
        name=name,
        posts=posts,
        quarter_labels=QUARTER_LABELS,
    )


@bp.get("/post/<int:instance_id>")
def post(instance_id: int) -> str:
    return _post_page(instance_id)


def _post_page(
    instance_id: int,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> str:
    page = _page()
    with current_engine().db.read() as s:
        sign = model.post(s, instance_id, _now())
        feedback, total = model.visible_feedback(s, sign.id, page, FEEDBACK_PER_PAGE)
    return render_template(
        "board/post.html",
        sign=sign,
        feedback=feedback,
        total=total,
        page=page,
        pages=max(1, -(-total // FEEDBACK_PER_PAGE)),
        form=form or {"author": "", "body": ""},
        errors=errors or {},
        problem=problem,
        quarter_labels=QUARTER_LABELS,
        limits={"author": model.AUTHOR_MAX, "body_min": model.BODY_MIN, "body_max": model.BODY_MAX},
    )


@bp.post("/post/<int:instance_id>/feedback")
def feedback(instance_id: int) -> Response | tuple[str, int]:
    """Leave feedback on a post; a bad or too frequent submission comes back with the text kept."""
    form = {"author": request.form.get("author", ""), "body": request.form.get("body", "")}
    address = model.address_hash(current_app.config["SECRET_KEY"], request.remote_addr)
    try:
        with current_engine().db.write() as s:
            model.post_feedback(s, instance_id, form["author"], form["body"], address, _now())
    except ValidationFailed as err:
        problem = _("留言未能提交，请按提示修改。")
        kept = {
            "author": model.without_controls(form["author"], allow_newlines=False),
            "body": model.without_controls(form["body"], allow_newlines=True),
        }
        return _post_page(instance_id, kept, _errors(err), problem), 422
    except model.RateLimited:
        problem = _("提交过于频繁，请稍后再试。您填写的内容已保留。")
        return _post_page(instance_id, form, {}, problem), 429
    flash(_("感谢您的监督！留言已发布。"), "info")
    return redirect(url_for("board.post", instance_id=instance_id, _anchor="feedback"), code=303)


# --- moderation ----------------------------------------------------------------------------------


@bp.get("/moderate")
@require_role(*model.MODERATOR_ROLES)
def moderate() -> str:
    return _moderation_page()


def _moderation_page(error_for: int | None = None, error: str | None = None) -> str:
    raw = request.args.get("before", "")
    before = int(raw) if raw.isdigit() else None
    with current_engine().db.read() as s:
        entries = model.moderation_list(s, current_user.id, before, MODERATION_PER_PAGE)
    older = entries[-1].id if len(entries) == MODERATION_PER_PAGE else None
    return render_template(
        "board/moderate.html",
        entries=entries,
        older=older,
        error_for=error_for,
        error=error,
        reason_max=model.REASON_MAX,
    )


@bp.post("/moderate/<int:feedback_id>/hide")
@login_required
def hide(feedback_id: int) -> Response | tuple[str, int]:
    return _set_hidden(feedback_id, True)


@bp.post("/moderate/<int:feedback_id>/unhide")
@login_required
def unhide(feedback_id: int) -> Response | tuple[str, int]:
    return _set_hidden(feedback_id, False)


def _set_hidden(feedback_id: int, hidden: bool) -> Response | tuple[str, int]:
    """Hide or show one entry; outside the moderator's organisations it does not exist (404)."""
    reason = request.form.get("reason", "")
    try:
        with current_engine().db.write() as s:
            model.set_hidden(s, feedback_id, signed_in_user(s), hidden, reason, _now())
    except ValidationFailed as err:
        return _moderation_page(feedback_id, next(iter(_errors(err).values()))), 422
    flash(_("已隐藏该留言。") if hidden else _("已恢复显示该留言。"), "info")
    return redirect(url_for("board.moderate", _anchor=f"fb-{feedback_id}"), code=303)
