"""The task inbox (/inbox)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("inbox", __name__, url_prefix="/inbox")
