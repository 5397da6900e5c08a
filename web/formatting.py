"""Template filters for how people read times and hashes.

The database stores UTC; people in the party organisations read Beijing time. China has one zone
and no daylight saving, so a fixed +08:00 offset is exact and needs no tz database on the host.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask

BEIJING = timezone(timedelta(hours=8), "北京时间")


def beijing_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def short_hash(value: str | None, length: int = 12) -> str:
    return (value or "")[:length]


def init_app(app: Flask) -> None:
    app.add_template_filter(beijing_time, "beijing_time")
    app.add_template_filter(short_hash, "short_hash")
