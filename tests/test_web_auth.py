"""Sign-in, sign-out, lock-out, CSRF, session cookies and the remembered language switch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select, update

from engine import Engine
from engine.models import AuditEvent, User
from tests.web import PASSWORD, csrf, post, sign_in
from web.auth import MAX_FAILURES


def attempt(app: Flask, username: str, password: str):  # type: ignore[no-untyped-def]
    client = app.test_client()
    form = {"username": username, "password": password, "csrf_token": csrf(client)}
    return client.post("/login", data=form)


def actions(engine: Engine) -> list[tuple[str, str]]:
    with engine.db.read() as s:
        return [(e.actor, e.action) for e in s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()]


def test_pages_need_sign_in_and_come_back_after_it(web_app: Flask) -> None:
    client = web_app.test_client()
    response = client.get("/")
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]

    form = {"username": "sec1", "password": PASSWORD, "csrf_token": csrf(client)}
    signed = client.post("/login?next=/healthz", data=form)

    assert signed.status_code == 302 and signed.headers["Location"] == "/healthz"
    assert client.get("/").status_code == 200


def test_a_wrong_password_or_unknown_name_gives_the_same_answer_and_is_audited(
    web_app: Flask, engine: Engine
) -> None:
    wrong = attempt(web_app, "sec1", "not the password")
    unknown = attempt(web_app, "nobody", "not the password")

    assert wrong.status_code == unknown.status_code == 401
    text = "用户名或密码不正确"
    assert text in wrong.get_data(as_text=True) and text in unknown.get_data(as_text=True)
    assert actions(engine)[-2:] == [("sec1", "sign_in_failed"), ("nobody", "sign_in_failed")]


def test_repeated_failures_lock_the_account_even_for_the_right_password(
    web_app: Flask, engine: Engine
) -> None:
    for _ in range(MAX_FAILURES):
        attempt(web_app, "sec1", "guess")

    locked = attempt(web_app, "sec1", PASSWORD)

    assert locked.status_code == 401 and "锁定" in locked.get_data(as_text=True)
    with engine.db.write() as s:  # fifteen minutes later
        s.execute(update(User).where(User.username == "sec1").values(locked_until=datetime.now(UTC)))
    assert attempt(web_app, "sec1", PASSWORD).status_code == 302


def test_a_success_resets_the_failure_count(web_app: Flask, engine: Engine) -> None:
    for _ in range(MAX_FAILURES - 1):
        attempt(web_app, "sec1", "guess")
    assert attempt(web_app, "sec1", PASSWORD).status_code == 302
    for _ in range(MAX_FAILURES - 1):
        attempt(web_app, "sec1", "guess")
    assert attempt(web_app, "sec1", PASSWORD).status_code == 302


def test_an_inactive_user_cannot_sign_in(web_app: Flask, engine: Engine) -> None:
    with engine.db.write() as s:
        s.execute(update(User).where(User.username == "member1").values(active=False))
    assert attempt(web_app, "member1", PASSWORD).status_code == 401


def test_deactivating_a_user_ends_their_open_sessions(web_app: Flask, engine: Engine) -> None:
    client = sign_in(web_app, "member1")
    with engine.db.write() as s:
        s.execute(update(User).where(User.username == "member1").values(active=False))
    assert client.get("/").status_code == 302


def test_sign_in_and_sign_out_are_audited_and_sign_out_needs_a_post(web_app: Flask, engine: Engine) -> None:
    client = sign_in(web_app, "sec1")
    assert client.get("/logout").status_code == 405

    response = post(client, "/logout")

    assert response.status_code == 302 and client.get("/").status_code == 302
    assert actions(engine)[-2:] == [("sec1", "signed_in"), ("sec1", "signed_out")]


def test_a_form_without_its_csrf_token_is_refused(web_app: Flask) -> None:
    client = sign_in(web_app, "sec1")
    refused = client.post("/logout")
    assert refused.status_code == 400 and "页面已过期" in refused.get_data(as_text=True)
    no_token = web_app.test_client().post("/login", data={"username": "sec1", "password": PASSWORD})
    assert no_token.status_code == 400


def test_next_never_leads_off_site(web_app: Flask) -> None:
    for target in ("https://evil.example/", "//evil.example/", "javascript:alert(1)"):
        client = web_app.test_client()
        form = {"username": "sec1", "password": PASSWORD, "csrf_token": csrf(client)}
        response = client.post("/login", query_string={"next": target}, data=form)
        assert response.headers["Location"] == "/", target


def test_the_session_cookie_is_http_only_and_same_site(web_app: Flask) -> None:
    client = web_app.test_client()
    form = {"username": "sec1", "password": PASSWORD, "csrf_token": csrf(client)}
    response = client.post("/login", data=form)
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("qizhi_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_language_switch_is_remembered_on_the_account(web_app: Flask, engine: Engine) -> None:
    client = sign_in(web_app, "sec1")
    assert '<html lang="zh-CN">' in client.get("/").get_data(as_text=True)

    post(client, "/lang", {"lang": "en"})

    assert '<html lang="en">' in client.get("/").get_data(as_text=True)
    with engine.db.read() as s:
        assert s.execute(select(User.locale).where(User.username == "sec1")).scalar_one() == "en"
    fresh = sign_in(web_app, "sec1")  # a new browser: the account remembers
    assert '<html lang="en">' in fresh.get("/").get_data(as_text=True)


def test_an_unknown_language_is_ignored(web_app: Flask) -> None:
    client = sign_in(web_app, "sec1")
    post(client, "/lang", {"lang": "xx"})
    assert '<html lang="zh-CN">' in client.get("/").get_data(as_text=True)


def test_lockout_expiry_is_a_time_not_a_counter(web_app: Flask, engine: Engine) -> None:
    with engine.db.write() as s:
        until = datetime.now(UTC) + timedelta(minutes=5)
        s.execute(update(User).where(User.username == "sec2").values(locked_until=until))
    assert attempt(web_app, "sec2", PASSWORD).status_code == 401
