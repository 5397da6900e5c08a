"""Query parameters several endpoints share: keyset cursors and page sizes."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _

from web.api.errors import bad_request
from web.api.registry import Param
from web.api.schemas import CURSOR_PATTERN, MAX_ID

CURSOR = Param(
    "cursor",
    {"type": "string", "pattern": CURSOR_PATTERN},
    "Opaque position from a previous page's next_cursor.",
)


def limit_param(default: int, most: int) -> Param:
    return Param(
        "limit", {"type": "integer", "minimum": 1, "maximum": most, "default": default}, "Page size."
    )


def cursor(args: dict[str, Any]) -> int | None:
    """The key to continue from. Cursors are ids today; clients must treat them as opaque strings."""
    raw = args.get("cursor")
    if raw is None:
        return None
    value = int(raw)
    if value > MAX_ID:
        raise bad_request(_("cursor 参数有误。"), {"cursor": ["out of range"]})
    return value
