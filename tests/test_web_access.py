"""Every endpoint, tried by the wrong people: nobody signed in, someone with no role, another branch.

Links are hidden from people without access, but this test never follows links: it walks the
app's URL map, so a new page that forgets its check fails here rather than in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from engine import Engine
from engine.models import (
    Attachment,
    BoardFeedback,
    HumanTask,
    Incident,
    Membership,
    Notification,
    Organisation,
    User,
)
from tests.helpers import files
from tests.web import csrf, sign_in

# Answer anyone, signed in or not.
PUBLIC = {
    "static",
    "vendor.asset",
    "auth.login",
    "health.healthz",
    "i18n.switch",
    "board.index",
    "board.branch",
    "board.post",
    "board.feedback",
}
# Every signed-in user has these pages (their content is scoped to the user).
SIGNED_IN = {
    "home.index",
    "auth.logout",
    "inbox.index",
    "inbox.claim_many",
    "instances.index",
    "instances.start",
    "notifications.index",
    "notifications.read_all",
}
TITLE = "第一支部的保密项目"
FEEDBACK = "只给第一支部看的意见"


@dataclass
class World:
    """Ids of things that belong to branch B1, which neither sec2 nor outsider may touch."""

    args: dict[str, object]


@pytest.fixture
def world(web_app: Flask, engine: Engine) -> World:
    engine.deploy(files("approval.bpmn", "apply.json", "review.json"), "designer")
    instance = engine.start("approval", "sec1", "B1", {"title": TITLE})
    with engine.db.write() as s:
        task = s.execute(select(HumanTask).where(HumanTask.instance_id == instance.id)).scalars().first()
        assert task is not None
        user = s.execute(select(User).where(User.username == "sec1")).scalar_one()
        member = s.execute(select(User).where(User.username == "member1")).scalar_one()
        b1 = s.execute(select(Organisation).where(Organisation.code == "B1")).scalar_one()
        membership = s.execute(select(Membership).where(Membership.user_id == member.id)).scalars().first()
        attachment = Attachment(
            instance_id=instance.id, task_id=task.id, uploaded_by_id=user.id, filename="秘密.pdf",
            content_type="application/pdf", size=4, sha256="0" * 64, storage_key="not-on-disk",
        )
        incident = Incident(instance_id=instance.id, kind="script", message="boom")
        feedback = BoardFeedback(
            instance_id=instance.id, org_id=b1.id, body=FEEDBACK, address_hash="x" * 64
        )
        notice = Notification(user_id=user.id, kind="reminder", title="提醒", dedupe_key="k", task_id=task.id)
        s.add_all([attachment, incident, feedback, notice])
        s.flush()
        args = {
            "instance_id": instance.id,
            "task_id": task.id,
            "attachment_id": attachment.id,
            "incident_id": incident.id,
            "feedback_id": feedback.id,
            "notification_id": notice.id,
            "org_id": b1.id,
            "user_id": member.id,
            "membership_id": membership.id if membership else 1,
            "seq": 1,
            "figure": "projects_by_stage",
            "code": "B1",
            "package": "htmx",
            "filename": "htmx.min.js",
        }
    return World(args)


def routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every rule, with B1's ids filled in."""
    return [
        (rule.endpoint, method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        if not rule.rule.startswith("/api/")
    ]


def url(rule: str, args: dict[str, object]) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: str(args[m.group(1)]), rule)


def call(  # type: ignore[no-untyped-def]
    client: FlaskClient, method: str, path: str, token_page: str, form: dict[str, object] | None = None
):
    """A GET, or a POST carrying a valid CSRF token (fetched fresh: signing out clears the session)."""
    if method == "GET":
        return client.get(path)
    return client.post(path, data={**(form or {}), "csrf_token": csrf(client, token_page)})


def forms(args: dict[str, object]) -> dict[str, dict[str, object]]:
    """Form fields aimed at branch B1, for endpoints that take their target from the form, not the URL."""
    return {"instances.pledge_cycle": {"org": args["org_id"], "year": datetime.now(UTC).year}}


def test_nobody_signed_in_is_sent_to_sign_in_from_every_private_page(web_app: Flask, world: World) -> None:
    client = web_app.test_client()
    checked = 0
    for endpoint, method, rule in routes(web_app):
        if endpoint in PUBLIC:
            continue
        response = call(client, method, url(rule, world.args), "/login")
        assert response.status_code == 302 and "/login" in response.headers["Location"], (endpoint, method)
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("username", ["outsider", "sec2", "member3"])
def test_people_outside_the_branch_get_403_or_404_on_everything_of_it(
    web_app: Flask, world: World, username: str
) -> None:
    client = sign_in(web_app, username)
    for endpoint, method, rule in routes(web_app):
        if endpoint in PUBLIC | SIGNED_IN:
            continue
        form = forms(world.args).get(endpoint)
        response = call(client, method, url(rule, world.args), "/", form)
        body = response.get_data()
        assert TITLE.encode() not in body and FEEDBACK.encode() not in body, (username, endpoint)
        # A secretary has pages of their own (their dashboard, their branch's feedback): those may
        # answer, showing nothing of B1. Anything aimed at B1 (an id in the URL or the form) may not.
        own_page = username != "outsider" and "<" not in rule and form is None and method == "GET"
        if not own_page:
            assert response.status_code in (403, 404), (username, endpoint, method, response.status_code)


@pytest.mark.parametrize("username", ["outsider", "sec2"])
def test_pages_every_user_has_show_nothing_of_another_branch(
    web_app: Flask, world: World, username: str
) -> None:
    client = sign_in(web_app, username)
    for path in ("/", "/inbox/", "/instances/", "/notifications/", "/instances/new"):
        response = client.get(path)
        assert response.status_code in (200, 403), (username, path)
        assert TITLE not in response.get_data(as_text=True), (username, path)


def test_the_branch_itself_can_reach_its_things(web_app: Flask, world: World) -> None:
    """The other side of the coin: the same URLs answer the branch secretary, so the 404s above are real."""
    client = sign_in(web_app, "sec1")
    for path in (f"/instances/{world.args['instance_id']}", f"/tasks/{world.args['task_id']}"):
        response = client.get(path)
        assert response.status_code == 200 and TITLE in response.get_data(as_text=True), path
