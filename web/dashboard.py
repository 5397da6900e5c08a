"""Dashboards: projects by stage, overdue tasks, compliance, pledge figures, the large screen (/dashboard)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
