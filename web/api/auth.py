"""Bearer-token authentication for the API: ``Authorization: Bearer qz_…``, nothing else.

Session cookies are deliberately ignored here, so a page in someone's browser cannot call the API
with their session (which is also why the API needs no CSRF token). A missing token and a bad one
are both 401 with a ``WWW-Authenticate`` challenge (RFC 6750); the message never says whether a
token exists.
"""

from __future__ import annotations

from flask import g, request
from flask_babel import gettext as _

from engine import tokens
from engine.models import utcnow
from web.api.errors import ApiError
from web.extension import current_engine

REALM = 'Bearer realm="qizhi"'


def authenticate() -> tokens.Bearer:
    """The caller of this request, from its bearer token; 401 without a valid one."""
    header = _authorization_header()
    scheme, _sep, token = header.partition(" ")
    if not header:
        message = _("需要访问令牌：Authorization: Bearer <令牌>。")
        raise ApiError(401, "unauthorized", message, None, {"WWW-Authenticate": REALM})
    if scheme.lower() != "bearer" or not token.strip():
        raise _invalid(_("Authorization 请求头应为 Bearer <令牌>。"))
    engine = current_engine()
    with engine.db.read() as s:
        bearer = tokens.verify(s, token.strip())
    if bearer is None:
        raise _invalid(_("访问令牌无效、已撤销，或其用户已停用。"))
    now = utcnow()
    if tokens.needs_touch(bearer, now):
        with engine.db.write() as s:
            tokens.touch(s, bearer, now)
    g.api_caller = bearer
    return bearer


def caller() -> tokens.Bearer:
    """Who is calling; every non-public view runs after :func:`authenticate` succeeded."""
    return g.api_caller


def _authorization_header() -> str:
    return request.headers.get("Authorization", "").strip()


def _invalid(message: str) -> ApiError:
    challenge = f'{REALM}, error="invalid_token"'
    return ApiError(401, "invalid_token", message, None, {"WWW-Authenticate": challenge})
