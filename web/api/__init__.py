"""The REST API, ``/api/v1``: JSON over the engine for other systems and operators' scripts.

Register with ``app.register_blueprint(web.api.bp)``. Callers authenticate with bearer tokens
(``qizhi token create``), never session cookies, so the blueprint exempts itself from CSRF when
registered. Each endpoint is declared once (web/api/registry.py) and that declaration is both
its check and its entry in ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from flask.blueprints import BlueprintSetupState

from web.api import audit, definitions, document, instances, messages, tasks  # noqa: F401  (routes)
from web.api.errors import register
from web.api.registry import bp

register(bp)


@bp.record_once
def _exempt_from_csrf(state: BlueprintSetupState) -> None:
    """Bearer tokens are not sent by browsers on their own, so cross-site forgery has nothing to ride on."""
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)


__all__ = ["bp"]
