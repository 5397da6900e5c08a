"""Qizhi's Flask shell: the application factory.

The engine knows nothing of Flask; this package owns the process-wide ``engine.Engine`` and hands
it to views and CLI commands through :func:`engine_of` / :func:`current_engine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from engine import Database, Engine
from web import (
    admin,
    api,
    audit_ui,
    auth,
    board,
    dashboard,
    designer,
    errors,
    form_editor,
    formatting,
    health,
    home,
    i18n,
    inbox,
    incidents,
    instances,
    nav,
    notifications,
    security,
    settings,
    supervise,
    tasks,
    vendor,
)
from web.extension import attach, current_engine, engine_of

csrf = CSRFProtect()


def create_app(config: Mapping[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """Build the app. ``config`` overrides the ``QIZHI_*`` environment variables, which override defaults.

    ``instance_path`` moves Flask's instance folder (the default database and the secret key live
    there); tests use it so they never write into the checkout.
    """
    app = Flask(__name__, instance_path=instance_path)
    settings.configure(app, config or {})
    if hops := app.config[settings.PROXIES]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    attach(app, Engine(Database(app.config[settings.DATABASE_URL])))
    csrf.init_app(app)
    security.init_app(app)
    formatting.init_app(app)
    i18n.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    nav.init_app(app)
    for blueprint in (
        home.bp,
        health.bp,
        vendor.bp,
        inbox.bp,
        tasks.bp,
        instances.bp,
        board.bp,
        admin.bp,
        audit_ui.bp,
        incidents.bp,
        notifications.bp,
        dashboard.bp,
        designer.bp,
        form_editor.bp,
        supervise.bp,
        api.bp,
    ):
        app.register_blueprint(blueprint)
    return app


__all__ = ["create_app", "current_engine", "engine_of"]
