"""Helpers for the REST API tests: the app with the API, tokens, and a client that sends one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from engine import Engine, tokens
from tests.conftest import FIXTURES

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
SCORING = ("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json")
APPLICATION = {"title": "党员先锋岗建设", "problems": ["青年党员参与度低", "活动形式单一"], "budget": 5000}


def with_api(app: Flask) -> Flask:
    """The app with the API blueprint (registered here until create_app registers it itself)."""
    if "api" not in app.blueprints:
        import web.api

        app.register_blueprint(web.api.bp)
    return app


def token_for(engine: Engine, username: str, name: str = "test") -> str:
    with engine.db.write() as s:
        return tokens.create(s, username, name)[1]


class Api:
    """A test client speaking JSON with one person's bearer token."""

    def __init__(self, app: Flask, token: str | None) -> None:
        self.client: FlaskClient = app.test_client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.client.get(f"/api/v1{url}", headers=self.headers, **kwargs)

    def post(self, url: str, json: Any = None, **kwargs: Any) -> TestResponse:
        if json is not None:
            kwargs["json"] = json
        return self.client.post(f"/api/v1{url}", headers=self.headers, **kwargs)

    def deploy(self, *names: str, key: str | None = None) -> TestResponse:
        form: dict[str, Any] = {"files": [((FIXTURES / n).open("rb"), Path(n).name) for n in names]}
        if key:
            form["key"] = key
        try:
            return self.post("/definitions", data=form, content_type="multipart/form-data")
        finally:
            for handle, _ in form["files"]:
                handle.close()


def as_user(app: Flask, engine: Engine, username: str) -> Api:
    return Api(app, token_for(engine, username))


def error_of(response: TestResponse) -> dict[str, Any]:
    """The error object, after checking the envelope every API error must have."""
    assert response.is_json, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]
