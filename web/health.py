"""``/healthz`` for load balancers and ``make run`` checks: the app is up and its database answers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from web.extension import current_engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    db = current_engine().db
    kind = db.engine.dialect.name
    try:
        with db.read() as s:
            s.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return jsonify(status="error", database=kind), 503
    return jsonify(status="ok", database=kind), 200
