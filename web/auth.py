"""Sign-in and sign-out: Flask-Login sessions over ``app_user``, with lock-out after repeated failures.

Every attempt is audited (signed_in, sign_in_failed, signed_out). A failure never says whether the
name or the password was wrong. Five failures in a row lock the account for fifteen minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from engine import audit
from engine.models import Membership, User
from web import settings
from web.demo import sign_in_help
from web.extension import current_engine
from web.passwords import check_password

bp = Blueprint("auth", __name__)
MAX_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)


@dataclass
class Principal(UserMixin):
    """The signed-in person for one request: a plain object, so no ORM row outlives its session."""

    id: int
    username: str
    display_name: str
    locale: str | None
    roles: frozenset[str] = field(default_factory=frozenset)

    def get_id(self) -> str:
        return str(self.id)

    def has_role(self, *roles: str) -> bool:
        """Holds one of ``roles`` in some organisation: enough to show a page's link, never to act."""
        return bool(self.roles.intersection(roles))


def load_principal(s: Session, user_id: int) -> Principal | None:
    user = s.get(User, user_id)
    if user is None or not user.active:
        return None
    roles = s.execute(select(Membership.role).where(Membership.user_id == user.id)).scalars()
    return Principal(user.id, user.username, user.display_name, user.locale, frozenset(roles))


def init_app(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"
    manager.login_message = None  # the sign-in page says why on its own
    manager.session_protection = "strong"

    @manager.user_loader
    def _load(user_id: str) -> Principal | None:
        if not user_id.isdigit():
            return None
        with current_engine().db.read() as s:
            return load_principal(s, int(user_id))

    app.register_blueprint(bp)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: an open redirect would make our sign-in page a phishing tool."""
    if not target:
        return url_for("home.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("home.index")
    return target


def _record(s: Session, actor: str, action: str, **payload: object) -> None:
    audit.append(s, [audit.PendingEvent(actor=actor, action=action, payload=payload | _client())])


def _client() -> dict[str, str]:
    return {"address": request.remote_addr or "", "agent": request.user_agent.string[:200]}


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()[:64]
        principal, error = _attempt(username, request.form.get("password", ""))
        if principal is not None:
            session.clear()
            login_user(principal)
            if principal.locale:
                session["lang"] = principal.locale
            return redirect(_safe_next(request.args.get("next")))
    demo = None
    if current_app.config[settings.DEMO]:
        with current_engine().db.read() as s:
            demo = sign_in_help(s)
    status = 401 if error else 200
    return render_template("auth/login.html", error=error, username=username, demo=demo), status


def _attempt(username: str, password: str) -> tuple[Principal | None, str | None]:
    """Check one sign-in and record it; the message is the same for every kind of failure but lock-out."""
    now = datetime.now(UTC)
    with current_engine().db.write() as s:
        user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if user is not None and user.locked_until is not None and user.locked_until > now:
            check_password(None, password)
            _record(s, username, "sign_in_failed", reason="locked")
            minutes = _minutes(user, now)
            return None, _("账号因多次登录失败已暂时锁定，请 %(minutes)d 分钟后再试。", minutes=minutes)
        if user is None or not user.active or not check_password(user.password_hash, password):
            if user is not None:
                user.failed_logins += 1
                if user.failed_logins >= MAX_FAILURES:
                    user.locked_until = now + LOCK_FOR
                    user.failed_logins = 0
            _record(s, username or "-", "sign_in_failed", reason="credentials")
            return None, _("用户名或密码不正确。")
        user.failed_logins = 0
        user.locked_until = None
        _record(s, username, "signed_in")
        s.flush()
        return load_principal(s, user.id), None


def _minutes(user: User, now: datetime) -> int:
    assert user.locked_until is not None
    return max(1, int((user.locked_until - now).total_seconds() // 60) + 1)


@bp.post("/logout")
def logout() -> Response:
    if current_user.is_authenticated:
        with current_engine().db.write() as s:
            _record(s, current_user.username, "signed_out")
    logout_user()
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("您已安全退出。"), "info")
    return redirect(url_for("auth.login"))

