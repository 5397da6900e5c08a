"""Organisations, people and roles; roll import from .xlsx (/admin)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
