"""The auditor's read-only audit trail (/audit)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("audit_ui", __name__, url_prefix="/audit")
