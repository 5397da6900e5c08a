"""The navigation bar: which sections a user sees, and the counts beside them.

A section appears when its blueprint is registered and the user holds one of its roles; the views
check access again themselves. Counts come from indexed projections (one query each), never from
workflow state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, request
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, select

from engine.models import Notification
from engine.queries import inbox_count
from web.extension import current_engine


@dataclass(frozen=True)
class Section:
    endpoint: str
    label: Any
    roles: tuple[str, ...] | None = None  # None: every signed-in user


SECTIONS = [
    Section("inbox.index", _l("待办")),
    Section("instances.index", _l("流程实例")),
    Section("board.index", _l("亮诺公示")),
    Section("dashboard.index", _l("统计分析"), ("party_committee", "party_office", "branch_secretary")),
    Section("incidents.index", _l("异常处理"), ("party_office", "admin")),
    Section("audit_ui.index", _l("审计追溯"), ("auditor", "admin")),
    Section("designer.index", _l("流程设计"), ("designer", "admin")),
    Section("admin.orgs", _l("组织与人员"), ("admin",)),
]


def visible_sections() -> list[Section]:
    registered = current_app.view_functions
    return [
        s
        for s in SECTIONS
        if s.endpoint in registered and (s.roles is None or current_user.has_role(*s.roles))
    ]


def nav_context() -> dict[str, Any]:
    if request.blueprint in ("vendor", "static") or not current_user.is_authenticated:
        return {"nav_sections": [], "nav_counts": {}}
    with current_engine().db.read() as s:
        unread = s.execute(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == current_user.id, Notification.read_at.is_(None))
        ).scalar_one()
        counts = {"inbox.index": inbox_count(s, current_user.id), "notifications": unread}
    return {"nav_sections": visible_sections(), "nav_counts": counts}


def has_endpoint(name: str) -> bool:
    """For templates: link to a page only if its blueprint provides it."""
    return name in current_app.view_functions


def init_app(app: Flask) -> None:
    app.context_processor(nav_context)
    app.jinja_env.globals["has_endpoint"] = has_endpoint
