"""The home page: a read-only view of the whole installation, the first thing ``make run`` shows."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from web import settings
from web.access import login_required
from web.audit_ui import monitor
from web.extension import current_engine
from web.overview import overview

bp = Blueprint("home", __name__)

STATUS_LABELS = {"running": _l("运行中"), "completed": _l("已完成"), "failed": _l("失败")}
# Who sees the installation-wide overview (definitions, counts, chain status); others see their work.
OVERSEERS = ("party_committee", "party_office", "auditor", "designer", "admin")


@bp.get("/")
@login_required
def index() -> str:
    engine = current_engine()
    demo_mode = bool(current_app.config[settings.DEMO])
    return render_template(
        "home.html",
        view=overview(engine, monitor()) if current_user.has_role(*OVERSEERS) else None,
        demo_mode=demo_mode,
        database=engine.db.engine.dialect.name,
        status_labels=STATUS_LABELS,
    )
