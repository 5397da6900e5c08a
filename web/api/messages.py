"""``POST /messages``: another system tells waiting processes that something happened.

The engine delivers a message to every instance waiting for it. Over the API that would let
anyone with a token push data into any organisation's processes, so delivery is limited to
instances in organisations where (or above which) the caller holds an operator role: the party
office, or an administrator. An integration gets a service account with that role.
"""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from werkzeug.wrappers import Response

from engine.directory import holds_role_anywhere
from web.api.auth import caller
from web.api.errors import forbidden, json_body
from web.api.registry import Body, operation
from web.extension import current_engine

MESSAGE_ROLES = ("party_office", "admin")


@operation(
    "POST",
    "/messages",
    summary="Deliver a message to the instances waiting for it",
    tag="messages",
    body=Body("SendMessage", example={"name": "budget_allocated", "payload": {"amount": 5000}}),
    responses={200: ("Delivered (to none, if nothing the caller may reach was waiting)", "Delivered")},
    errors=(403, 409, 422),
)
def send_message(body: dict[str, Any]) -> Response:
    """With ``business_key``, only instances with that key. Needs the party_office or admin role; the
    message reaches only instances of organisations at or below where the caller holds it."""
    me = caller()
    engine = current_engine()
    with engine.db.read() as s:
        if not holds_role_anywhere(s, me.user_id, MESSAGE_ROLES):
            raise forbidden(_("发送消息需要党建工作部或系统管理员角色。"))
    delivered = engine.send_message(
        body["name"], body.get("payload"), me.username, body.get("business_key"), roles=MESSAGE_ROLES
    )
    return json_body({"delivered": delivered})
