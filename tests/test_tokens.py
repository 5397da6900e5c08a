"""API bearer tokens: created for a person, shown once, stored hashed, listed, revoked.

Runs on whichever backend the ``db`` fixture gives (SQLite, or PostgreSQL via QIZHI_TEST_DATABASE_URL).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from engine import Engine, InvalidState, NotFound, tokens
from engine.models import ApiToken, AuditEvent, User, utcnow
from tests.api_helpers import Api, error_of, token_for, with_api
from web.cli import cli


@pytest.fixture
def app(web_app: Flask) -> Flask:
    return with_api(web_app)


def run(app: Flask, *args: str):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(cli, list(args), catch_exceptions=False)


def test_a_created_token_works_and_only_its_hash_is_stored(app: Flask, engine: Engine) -> None:
    secret = token_for(engine, "sec1", "HR sync")
    assert secret.startswith("qz_") and len(secret) > 40
    with engine.db.read() as s:
        row = s.execute(select(ApiToken)).scalar_one()
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == secret[:12] and row.name == "HR sync" and row.last_used_at is None
        stored = [str(v) for v in (row.token_hash, row.prefix, row.name)]
        assert all(secret not in value for value in stored)
    response = Api(app, secret).get("/tasks")
    assert response.status_code == 200 and response.get_json() == {"items": [], "next_cursor": None}
    with engine.db.read() as s:
        assert s.execute(select(ApiToken.last_used_at)).scalar_one() is not None


def test_a_revoked_token_is_401_from_the_next_request(app: Flask, engine: Engine) -> None:
    secret = token_for(engine, "sec1")
    api = Api(app, secret)
    assert api.get("/tasks").status_code == 200
    with engine.db.write() as s:
        token_id = s.execute(select(ApiToken.id)).scalar_one()
        info = tokens.revoke(s, token_id, actor="office")
    assert info.revoked_at is not None and info.username == "sec1"
    response = api.get("/tasks")
    assert response.status_code == 401 and error_of(response)["code"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    with engine.db.write() as s, pytest.raises(InvalidState):
        tokens.revoke(s, token_id)
    with engine.db.write() as s, pytest.raises(NotFound):
        tokens.revoke(s, 999)


def test_a_deactivated_users_token_stops_working(app: Flask, engine: Engine) -> None:
    api = Api(app, token_for(engine, "sec1"))
    with engine.db.write() as s:
        s.execute(update(User).where(User.username == "sec1").values(active=False))
    assert api.get("/tasks").status_code == 401
    with engine.db.write() as s, pytest.raises(NotFound):
        tokens.create(s, "sec1")


def test_last_use_is_written_at_most_once_a_minute(engine: Engine) -> None:
    secret = token_for(engine, "sec1")
    with engine.db.read() as s:
        bearer = tokens.verify(s, secret)
    assert bearer is not None and bearer.username == "sec1"
    now = utcnow()
    assert tokens.needs_touch(bearer, now)
    with engine.db.write() as s:
        tokens.touch(s, bearer, now)
    with engine.db.read() as s:
        again = tokens.verify(s, secret)
    assert again is not None and not tokens.needs_touch(again, now + timedelta(seconds=30))
    assert tokens.needs_touch(again, now + timedelta(minutes=2))
    with engine.db.write() as s:  # a stale reader touching again within the minute changes nothing
        tokens.touch(s, bearer, now + timedelta(seconds=10))
    with engine.db.read() as s:
        assert s.execute(select(ApiToken.last_used_at)).scalar_one() == again.last_used_at


def test_verify_refuses_what_is_not_a_token(engine: Engine) -> None:
    token_for(engine, "sec1")
    with engine.db.read() as s:
        for presented in ("", "qz_", "qz_x", "Bearer qz_x", "x" * 500, "qz_" + "a" * 300):
            assert tokens.verify(s, presented) is None


def test_token_create_prints_the_token_once_and_it_works(app: Flask, engine: Engine) -> None:
    result = run(app, "token", "create", "sec1", "--name", "HR sync")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("created API token 1 'HR sync' for sec1")
    secret = lines[-1]
    assert secret.startswith("qz_") and result.output.count(secret) == 1
    assert Api(app, secret).get("/tasks").status_code == 200
    listed = run(app, "token", "list")
    assert listed.exit_code == 0 and secret not in listed.output
    assert listed.output.startswith(f"1  sec1  {secret[:12]}…  HR sync  created ")
    assert listed.output.rstrip().endswith("active")
    with engine.db.read() as s:  # the audit trail records who made which token, never the token
        events = s.execute(select(AuditEvent).where(AuditEvent.action.like("token.%"))).scalars().all()
        assert [(e.actor, e.payload["user"]) for e in events] == [("operator", "sec1")]
        assert all(secret not in str(e.payload) for e in events)


def test_token_list_and_revoke_commands(app: Flask, engine: Engine) -> None:
    run(app, "token", "create", "sec1")
    run(app, "token", "create", "office", "--name", "reporting")
    assert run(app, "token", "list", "office").output.startswith("2  office  qz_")
    assert run(app, "token", "list", "sec2").output == "no API tokens\n"
    revoked = run(app, "token", "revoke", "2")
    assert revoked.exit_code == 0 and revoked.output == "revoked API token 2 'reporting' of office\n"
    assert "revoked " in run(app, "token", "list", "office").output
    again = run(app, "token", "revoke", "2")
    assert again.exit_code == 1 and "already revoked" in again.output
    missing = run(app, "token", "revoke", "99")
    assert missing.exit_code == 1 and "no API token 99" in missing.output
    nobody = run(app, "token", "create", "ghost")
    assert nobody.exit_code == 1 and "no active user 'ghost'" in nobody.output
    with engine.db.read() as s:
        actions = s.execute(select(AuditEvent.action).where(AuditEvent.action.like("token.%"))).scalars()
        assert list(actions) == ["token.created", "token.created", "token.revoked"]
