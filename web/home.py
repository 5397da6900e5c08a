"""The home page: a read-only view of the whole installation, the first thing ``make run`` shows."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from web import settings
from web.access import login_required
from web.extension import current_engine
from web.overview import overview

bp = Blueprint("home", __name__)

STATUS_LABELS = {"running": "运行中", "completed": "已完成", "failed": "失败"}


@bp.get("/")
@login_required
def index() -> str:
    engine = current_engine()
    demo_mode = bool(current_app.config[settings.DEMO])
    return render_template(
        "home.html",
        view=overview(engine, with_demo_accounts=demo_mode),
        demo_mode=demo_mode,
        database=engine.db.engine.dialect.name,
        status_labels=STATUS_LABELS,
    )
