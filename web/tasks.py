"""A task page: its form, diagram and history (/tasks/<id>)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
