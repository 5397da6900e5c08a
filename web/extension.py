"""Where the app keeps its engine: one ``engine.Engine`` per process, shared by requests and threads.

Kept apart from the factory so blueprints can import the accessor without an import cycle.
"""

from __future__ import annotations

from flask import Flask, current_app

from engine import Engine

KEY = "qizhi"


def attach(app: Flask, engine: Engine) -> None:
    app.extensions[KEY] = engine


def engine_of(app: Flask) -> Engine:
    """The app's engine."""
    return app.extensions[KEY]


def current_engine() -> Engine:
    """The engine of the app handling the current request or CLI command."""
    return engine_of(current_app)
