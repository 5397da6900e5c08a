"""Starting processes and viewing instances (/instances)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("instances", __name__, url_prefix="/instances")
