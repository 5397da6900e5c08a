"""Browser libraries (htmx, bpmn-js, ECharts) served from ``node_modules``, never copied into the repo.

``npm ci`` (run by the README's commands) installs the exact versions in ``package-lock.json``; this
blueprint serves only the ``dist`` folders listed here, so nothing else under node_modules is reachable.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, abort, current_app, send_from_directory
from werkzeug.wrappers import Response

bp = Blueprint("vendor", __name__, url_prefix="/vendor")
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
PACKAGES = {
    "htmx": "htmx.org/dist",
    "bpmn-js": "bpmn-js/dist",
    "echarts": "echarts/dist",
}


def node_modules() -> Path:
    return Path(os.environ.get("QIZHI_NODE_MODULES") or NODE_MODULES)


@bp.get("/<package>/<path:filename>")
def asset(package: str, filename: str) -> Response:
    folder = PACKAGES.get(package)
    if folder is None:
        abort(404)
    root = node_modules() / folder
    if not root.is_dir():
        current_app.logger.error("%s is missing: run `npm ci` (the README's commands do)", root)
        abort(404)
    response = send_from_directory(root, filename, max_age=86400)
    return response
