"""Incidents: failed jobs and scripts, retried or resolved by the party office (/incidents)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("incidents", __name__, url_prefix="/incidents")
