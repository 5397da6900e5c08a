"""Configuration: explicit overrides, then ``QIZHI_*`` environment variables, then safe defaults.

The defaults make ``qizhi serve`` work on a fresh checkout with nothing configured: a SQLite file
and a secret key, both in Flask's instance folder, which is outside version control. The secret
key is generated once and kept, so sessions survive a restart and no key is ever committed.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

DATABASE_URL = "QIZHI_DATABASE_URL"
SECRET_KEY = "QIZHI_SECRET_KEY"
DEMO = "QIZHI_DEMO"
ATTACHMENTS_DIR = "QIZHI_ATTACHMENTS_DIR"
SECURE_COOKIES = "QIZHI_SECURE_COOKIES"
PROXIES = "QIZHI_PROXIES"
MAX_PROXIES = 5
MAX_UPLOAD_MB = 20
SECRET_FILE = "secret_key"
DATABASE_FILE = "qizhi.db"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def configure(app: Flask, overrides: Mapping[str, Any]) -> None:
    """Fill ``app.config``: QIZHI_DATABASE_URL, SECRET_KEY, QIZHI_DEMO, plus any other overrides given."""
    own = (DATABASE_URL, SECRET_KEY, DEMO, ATTACHMENTS_DIR, SECURE_COOKIES, PROXIES)
    app.config.update({k: v for k, v in overrides.items() if k not in own})
    instance = Path(app.instance_path)
    url = _lookup(overrides, DATABASE_URL) or f"sqlite:///{instance / DATABASE_FILE}"
    app.config[DATABASE_URL] = url
    app.config["SECRET_KEY"] = _lookup(overrides, SECRET_KEY) or stored_secret(instance)
    app.config[DEMO] = flag(_lookup(overrides, DEMO), DEMO)
    app.config[ATTACHMENTS_DIR] = str(_lookup(overrides, ATTACHMENTS_DIR) or instance / "attachments")
    secure = flag(_lookup(overrides, SECURE_COOKIES), SECURE_COOKIES)
    _session_cookies(app, secure)
    app.config[PROXIES] = proxy_hops(_lookup(overrides, PROXIES))


def _session_cookies(app: Flask, secure: bool) -> None:
    """HttpOnly, SameSite=Lax, 8-hour sessions; Secure when served over HTTPS (QIZHI_SECURE_COOKIES=1).

    Secure is off by default only because ``make run`` serves plain http on localhost; behind TLS,
    production sets it on.
    """
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="qizhi_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        MAX_CONTENT_LENGTH=MAX_UPLOAD_MB * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session's life: a long form must not expire mid-typing
    )


def _lookup(overrides: Mapping[str, Any], name: str) -> Any:
    if name in overrides and overrides[name] is not None:
        return overrides[name]
    return os.environ.get(name)


def flag(value: Any, name: str = "flag") -> bool:
    """1/0, true/false, yes/no, on/off; anything else is a mistake worth stopping for."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (got {value!r})")


def proxy_hops(value: Any) -> int:
    """How many reverse proxies in front of the app to trust for the client address and scheme.

    0 (the default) trusts no ``X-Forwarded-*`` header, since a client could forge them; behind
    nginx set 1, so the board's per-address limits and the sign-in audit see the visitor, not nginx.
    """
    text = "0" if value is None else str(value).strip() or "0"
    if not text.isdigit() or int(text) > MAX_PROXIES:
        raise ConfigError(f"{PROXIES} must be a whole number from 0 to {MAX_PROXIES} (got {value!r})")
    return int(text)


def stored_secret(instance: Path) -> str:
    """The instance's secret key, created on first use with owner-only permissions.

    ``O_EXCL`` makes concurrent first starts (several web processes) agree on one key.
    """
    path = instance / SECRET_FILE
    instance.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def _read_secret(path: Path) -> str:
    # Another process may have created the file a moment ago and not written it yet.
    for _ in range(20):
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
        time.sleep(0.05)
    raise ConfigError(f"{path} is empty: delete it and a new key will be generated")
