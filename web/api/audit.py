"""``GET /audit/verify``: recompute the hash chain, for auditors and administrators."""

from __future__ import annotations

from flask_babel import gettext as _
from werkzeug.wrappers import Response

from engine.audit import verify
from engine.directory import holds_role_anywhere
from web.api import shapes
from web.api.auth import caller
from web.api.errors import forbidden, json_body
from web.api.registry import operation
from web.extension import current_engine

VERIFY_ROLES = ("auditor", "admin")


@operation(
    "GET",
    "/audit/verify",
    summary="Verify the whole audit chain",
    tag="audit",
    responses={200: ("The verdict; ok is false and first_bad_seq names the first altered event", "Verdict")},
    errors=(403,),
)
def verify_audit() -> Response:
    """Reads every event, so it takes a while on a large database; answers 200 either way."""
    me = caller()
    with current_engine().db.read() as s:
        if not holds_role_anywhere(s, me.user_id, VERIFY_ROLES):
            raise forbidden(_("校验审计链需要纪检/审计或系统管理员角色。"))
        return json_body(shapes.verdict(verify(s)))
