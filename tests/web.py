"""Helpers for tests of the web shell: an app on the test database, and clients signed in as someone.

CSRF protection stays on in tests, as in production: :func:`csrf` reads the token from a page the
way a browser's form would carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from engine import Database
from engine.models import User
from web import create_app, engine_of
from web.passwords import hash_password

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_app(db: Database, tmp_path: Path, **config: object) -> Flask:
    settings = {"QIZHI_DATABASE_URL": db.url, "QIZHI_SECRET_KEY": "test", "QIZHI_DEMO": "0", "TESTING": True}
    return create_app(settings | config, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def web_app(engine, db: Database, tmp_path: Path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """The app over the ``engine`` fixture's database: test directory seeded, every password PASSWORD."""
    with db.write() as s:
        s.execute(update(User).values(password_hash=hash_password(PASSWORD)))
    app = make_app(db, tmp_path)
    yield app
    engine_of(app).db.dispose()


def csrf(client: FlaskClient, page: str = "/login") -> str:
    html = client.get(page).get_data(as_text=True)
    found = _TOKEN.search(html)
    assert found, f"no CSRF token on {page}"
    return found.group(1)


def sign_in(app: Flask, username: str, password: str = PASSWORD) -> FlaskClient:
    client = app.test_client()
    form = {"username": username, "password": password, "csrf_token": csrf(client)}
    response = client.post("/login", data=form)
    assert response.status_code == 302, f"{username} could not sign in: {response.status_code}"
    return client


def post(client: FlaskClient, url: str, data: dict | None = None, **kwargs: object) -> TestResponse:
    """POST a form as the browser would, with the session's CSRF token."""
    body = dict(data or {})
    body.setdefault("csrf_token", csrf(client, "/"))
    return client.post(url, data=body, **kwargs)  # type: ignore[arg-type]
