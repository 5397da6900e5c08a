"""The process designer: edit BPMN in the browser, validate, deploy versions, migrate instances (/designer)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("designer", __name__, url_prefix="/designer")
