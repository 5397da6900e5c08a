"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document, built from the operations' declarations.

Nothing here is written by hand per endpoint: paths, parameters, bodies and responses come from
the ``@operation`` declarations in web/api (which also do the checking), and the schemas from
web/api/schemas.py. tests/test_api_schema.py holds it against the app's URL map and runs
schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from web.api.errors import json_body
from web.api.registry import JSON, OPERATIONS, STATUS_TEXT, operation
from web.api.schemas import SCHEMAS

DESCRIPTION = """Drive Qizhi (旗帜) without the browser: deploy processes, start instances, work
through inboxes and tasks, deliver messages, read the audit trail.

Every call except this document needs `Authorization: Bearer qz_…`; an operator creates a
token with `qizhi token create USERNAME`. The token acts as that person, under the same rules as
the web pages. Errors are always `{"error": {"code", "message", "details"}}`. Lists are pages
of `items` with a `next_cursor` to pass back as `?cursor=`."""


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    statuses: set[int] = set()
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = op.openapi()
        statuses.update(op.error_statuses())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Qizhi API", "version": "1.0.0", "description": DESCRIPTION},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in OPERATIONS)],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "qizhi token create USERNAME"}
            },
            "schemas": SCHEMAS,
            "responses": {f"E{status}": _error_response(status) for status in sorted(statuses)},
        },
    }


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": STATUS_TEXT[status],
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "description": "RFC 6750"}
        }
    return response


@operation(
    "GET",
    "/openapi.json",
    summary="This document",
    tag="meta",
    responses={200: ("OpenAPI 3.1", None)},
    public=True,
)
def openapi_json() -> Response:
    """Public: describes the API, holds no data."""
    return json_body(document())
