"""The REST API, endpoint by endpoint: success, and each way it refuses, always as a JSON error.

Runs on whichever backend the ``db`` fixture gives (SQLite, or PostgreSQL via QIZHI_TEST_DATABASE_URL).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from engine import Engine
from engine.directory import grant, sees_org
from engine.models import AuditEvent, Organisation, User
from tests.api_helpers import APPLICATION, APPROVAL, SCORING, Api, as_user, error_of, with_api
from tests.conftest import FIXTURES
from tests.helpers import assert_chain_intact
from tests.web import sign_in
from web.api.listing import visible_orgs


@pytest.fixture
def app(web_app: Flask) -> Flask:
    return with_api(web_app)


@pytest.fixture
def approval(app: Flask, engine: Engine) -> Api:
    """approval.bpmn deployed; the designer's client."""
    designer = as_user(app, engine, "designer")
    assert designer.deploy(*APPROVAL).status_code == 201
    return designer


def start(api: Api, org: str = "B1", **extra: Any) -> dict[str, Any]:
    response = api.post("/instances", {"process": "approval", "org": org, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# --- authentication and the error envelope ------------------------------------------------------


def test_missing_bad_and_unknown_tokens_are_401_with_a_challenge(app: Flask, engine: Engine) -> None:
    for headers, code in [
        ({}, "unauthorized"),
        ({"Authorization": "Basic c2VjMTp4"}, "invalid_token"),
        ({"Authorization": "Bearer "}, "invalid_token"),
        ({"Authorization": "Bearer qz_not-a-real-token"}, "invalid_token"),
    ]:
        response = app.test_client().get("/api/v1/tasks", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="qizhi"')
        assert error_of(response)["code"] == code


def test_a_signed_in_browser_session_is_not_an_api_credential(app: Flask) -> None:
    client = sign_in(app, "sec1")
    response = client.get("/api/v1/tasks")
    assert response.status_code == 401 and error_of(response)["code"] == "unauthorized"
    # and a POST without a CSRF token reaches the API (bearer auth), not the CSRF error page
    response = client.post("/api/v1/messages", json={"name": "x"})
    assert response.status_code == 401 and response.is_json


def test_unknown_routes_and_wrong_methods_answer_json(app: Flask, engine: Engine) -> None:
    api = as_user(app, engine, "sec1")
    missing = api.get("/no/such/thing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert error_of(api.get("/tasks/0"))["code"] == "not_found"
    assert api.get(f"/tasks/{2**63}").status_code == 404
    wrong = api.client.delete("/api/v1/tasks", headers=api.headers)
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]
    # pages outside /api/ keep their HTML error pages
    page = app.test_client().get("/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_an_unexpected_failure_is_a_json_500_without_a_traceback(
    app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    api = as_user(app, engine, "sec1")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("web.api.tasks.inbox", broken)
    response = api.get("/tasks")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error" and "secret" not in response.get_data(as_text=True)


def test_malformed_json_and_bad_parameters_are_400_with_details(
    approval: Api, app: Flask, engine: Engine
) -> None:
    sec1 = as_user(app, engine, "sec1")
    cases = [
        ("{not json", "application/json"),
        ('{"process": "approval", "org": "B1", "data": {"x": NaN}}', "application/json"),
        ("[1, 2]", "application/json"),
        ('{"process": "approval"}', "application/json"),
        ('{"process": "approval", "org": "B1", "colour": "red"}', "application/json"),
        ('{"process": "approval", "org": "B1", "data": "text"}', "application/json"),
        ('{"process": "approval", "org": "B1", "data": {"title": "a\\u0000b"}}', "application/json"),
        ('{"process": "approval", "org": "B1", "data": {"t": "\\ud800"}}', "application/json"),
        ("", "application/json"),
        ('{"process": "approval", "org": "B1", "data": {"x": 1e400}}', "application/json"),
        (
            '{"process": "approval", "org": "B1", "data": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
            "application/json",
        ),
        ("[" * 100_000 + "]" * 100_000, "application/json"),
    ]
    for body, kind in cases:
        response = sec1.post("/instances", data=body, content_type=kind)
        assert response.status_code == 400, (body, response.get_json())
        assert error_of(response)["code"] == "bad_request"
    details = error_of(sec1.post("/instances", {"process": "approval", "org": "B1", "colour": "red"}))[
        "details"
    ]
    assert details == {"colour": ["unknown field"]}
    details = error_of(sec1.post("/instances", {"org": "B1"}))["details"]
    assert details == {"process": ["required"]}
    for query in (
        "limit=0",
        "limit=abc",
        "limit=1000",
        "mine=maybe",
        "cursor=abc",
        "cursor=99999999999999999999",
    ):
        response = sec1.get(f"/tasks?{query}")
        assert response.status_code == 400, query
        assert error_of(response)["code"] == "bad_request"
    assert set(error_of(sec1.get("/tasks?limit=0&mine=x"))["details"]) == {"limit", "mine"}
    with engine.db.read() as s:  # nothing was started by any of those
        assert s.execute(select(AuditEvent).where(AuditEvent.action == "instance.started")).first() is None


def test_a_body_over_the_size_limit_is_413(approval: Api, app: Flask, engine: Engine) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 2000
    response = as_user(app, engine, "sec1").post(
        "/instances", {"process": "approval", "org": "B1", "data": {"title": "x" * 5000}}
    )
    assert response.status_code == 413 and error_of(response)["code"] == "request_entity_too_large"
    assert approval.deploy(*APPROVAL).status_code == 413


# --- definitions ----------------------------------------------------------------------------------


def test_deploy_lists_and_redeploys_the_same_version(app: Flask, engine: Engine) -> None:
    designer = as_user(app, engine, "designer")
    first = designer.deploy(*APPROVAL)
    assert first.status_code == 201
    body = first.get_json()
    assert body["key"] == "approval" and body["version"] == 1 and body["created"] is True
    again = designer.deploy(*APPROVAL)
    assert again.status_code == 200 and again.get_json() == {**body, "created": False}
    listed = as_user(app, engine, "member1").get("/definitions").get_json()["items"]
    assert [(d["key"], d["version"], d["deployed_by"]) for d in listed] == [("approval", 1, "designer")]
    assert designer.get("/definitions?key=other").get_json() == {"items": []}


def test_deploy_needs_the_designer_role(app: Flask, engine: Engine) -> None:
    response = as_user(app, engine, "sec1").deploy(*APPROVAL)
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    assert as_user(app, engine, "sec1").get("/definitions").get_json() == {"items": []}


def test_a_refused_bundle_lists_every_problem_and_stores_nothing(app: Flask, engine: Engine) -> None:
    designer = as_user(app, engine, "designer")
    response = designer.deploy("bad/broken.bpmn", "bad/badform.json", key="broken")
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_bundle"
    problems = error["details"]
    assert all(set(p) == {"file", "element", "message"} for p in problems)
    found = {(p["file"], p["element"]) for p in problems}
    assert ("broken.bpmn", "fill") in found and ("broken.bpmn", "evil") in found
    assert any(p["file"] == "badform.json" for p in problems)
    assert designer.get("/definitions").get_json() == {"items": []}


def test_upload_names_and_encodings_are_checked(app: Flask, engine: Engine) -> None:
    designer = as_user(app, engine, "designer")
    bpmn = (FIXTURES / "approval.bpmn").read_bytes()
    files = [
        (io.BytesIO(bpmn), "approval.bpmn"),
        (io.BytesIO("表单".encode("gbk")), "apply.json"),
        (io.BytesIO(b"x"), "notes.txt"),
        (io.BytesIO(bpmn), "approval.bpmn"),
    ]
    response = designer.post("/definitions", data={"files": files}, content_type="multipart/form-data")
    assert response.status_code == 422
    messages = {(p["file"], p["message"]) for p in error_of(response)["details"]}
    assert ("apply.json", "not UTF-8 text") in messages
    assert any(f == "notes.txt" and "only .bpmn" in m for f, m in messages)
    assert ("approval.bpmn", "two files have this name") in messages
    not_multipart = designer.post("/definitions", {"files": []})
    assert not_multipart.status_code == 400
    empty = designer.post("/definitions", data={"key": "x"}, content_type="multipart/form-data")
    assert empty.status_code == 400 and error_of(empty)["details"] == {"files": ["required"]}


# --- instances ------------------------------------------------------------------------------------


def test_start_answers_the_instance_with_its_open_tasks(approval: Api, app: Flask, engine: Engine) -> None:
    response = as_user(app, engine, "sec1").post(
        "/instances", {"process": "approval", "org": "B1", "data": {"title": "先锋岗"}}
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/instances/{body['id']}"
    assert body["status"] == "running" and body["org"] == "B1" and body["started_by"] == "sec1"
    assert body["title"] == "先锋岗" and body["data"] == {"title": "先锋岗"} and body["version"] == 1
    assert [(t["title"], t["lane"], t["holding"]) for t in body["open_tasks"]] == [
        ("填写申报书", "branch_secretary", "candidate")
    ]
    assert "先锋岗" in response.get_data(as_text=True)  # Chinese is not \\u-escaped


def test_start_refusals(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    unknown = sec1.post("/instances", {"process": "nope", "org": "B1"})
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
    assert sec1.post("/instances", {"process": "approval", "org": "ZZ"}).status_code == 404
    outside = sec1.post("/instances", {"process": "approval", "org": "B2"})
    assert outside.status_code == 403 and error_of(outside)["code"] == "forbidden"
    assert sec1.post("/instances", {"process": "approval", "org": "B1", "version": 9}).status_code == 404


def test_start_with_a_business_key_is_idempotent(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    first = start(sec1, business_key="HR-2026-001")
    again = sec1.post("/instances", {"process": "approval", "org": "B1", "business_key": "HR-2026-001"})
    assert again.status_code == 200 and again.get_json()["id"] == first["id"]
    # someone who may not see that instance learns nothing about it, and starts nothing
    sec2 = as_user(app, engine, "sec2")
    taken = sec2.post("/instances", {"process": "approval", "org": "B2", "business_key": "HR-2026-001"})
    assert taken.status_code == 409 and error_of(taken)["code"] == "conflict"
    assert "先锋" not in taken.get_data(as_text=True)
    assert sec2.get("/instances").get_json()["items"] == []


def test_instance_list_follows_who_may_see_what(approval: Api, app: Flask, engine: Engine) -> None:
    sec1, sec2 = as_user(app, engine, "sec1"), as_user(app, engine, "sec2")
    in_b1 = [start(sec1, data={"title": f"项目{i}"})["id"] for i in range(3)]
    in_b2 = start(sec2, org="B2")["id"]

    def ids(api: Api, query: str = "") -> list[int]:
        return [i["id"] for i in api.get(f"/instances{query}").get_json()["items"]]

    assert ids(sec1) == in_b1[::-1]  # newest first
    assert ids(sec2) == [in_b2]
    assert ids(as_user(app, engine, "office")) == [in_b2, *in_b1[::-1]]  # HQ sees both branches
    assert ids(as_user(app, engine, "outsider")) == []
    assert ids(as_user(app, engine, "office"), "?org=B2") == [in_b2]
    assert ids(as_user(app, engine, "office"), "?org=NOPE") == []
    assert ids(sec1, "?status=completed") == []
    assert ids(sec1, "?process=approval&status=running") == in_b1[::-1]


def test_instance_list_pages_with_a_cursor(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    started = [start(sec1)["id"] for _ in range(5)]
    seen: list[int] = []
    url = "/instances?limit=2"
    while True:
        page = sec1.get(url).get_json()
        assert len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/instances?limit=2&cursor={page['next_cursor']}"
    assert seen == started[::-1]


def test_visible_orgs_agrees_with_sees_org(approval: Api, engine: Engine) -> None:
    with engine.db.write() as s:
        grant(s, "member3", "B1G1", "party_member")  # a role low in the tree as well as one in B2
        users = s.execute(select(User.id)).scalars().all()
        orgs = s.execute(select(Organisation.id)).scalars().all()
        for user in users:
            listed = visible_orgs(s, user)
            assert listed == {o for o in orgs if sees_org(s, user, o)}, user


def test_instance_detail_and_who_gets_404(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    made = start(sec1, data={"title": "先锋岗"})
    shown = sec1.get(f"/instances/{made['id']}")
    assert shown.status_code == 200 and shown.get_json() == made
    for who in ("sec2", "member3", "outsider"):
        hidden = as_user(app, engine, who).get(f"/instances/{made['id']}")
        assert hidden.status_code == 404 and error_of(hidden)["code"] == "not_found"
    assert sec1.get("/instances/999999").status_code == 404


# --- tasks ----------------------------------------------------------------------------------------


def test_inbox_filters_and_pages(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    made = [start(sec1)["open_tasks"][0]["id"] for _ in range(3)]
    assert [t["id"] for t in sec1.get("/tasks").get_json()["items"]] == made
    assert as_user(app, engine, "sec2").get("/tasks").get_json()["items"] == []
    assert sec1.get("/tasks?process=other").get_json()["items"] == []
    assert sec1.get("/tasks?org=NOPE").get_json()["items"] == []
    assert len(sec1.get("/tasks?org=B1").get_json()["items"]) == 3
    assert sec1.get("/tasks?mine=true").get_json()["items"] == []
    assert sec1.get("/tasks?overdue=true").get_json()["items"] == []  # due in 7 days
    first = sec1.get("/tasks?limit=2").get_json()
    assert [t["id"] for t in first["items"]] == made[:2] and first["next_cursor"] == str(made[1])
    rest = sec1.get(f"/tasks?limit=2&cursor={first['next_cursor']}").get_json()
    assert [t["id"] for t in rest["items"]] == made[2:] and rest["next_cursor"] is None
    newest = sec1.get("/tasks?sort=newest&limit=2").get_json()
    assert [t["id"] for t in newest["items"]] == made[::-1][:2]
    rest = sec1.get(f"/tasks?sort=newest&limit=2&cursor={newest['next_cursor']}").get_json()
    assert [t["id"] for t in rest["items"]] == made[:1]
    assert sec1.get("/tasks?sort=sideways").status_code == 400


def test_a_task_comes_with_its_form_schema(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    made = start(sec1)
    task_id = made["open_tasks"][0]["id"]
    body = sec1.get(f"/tasks/{task_id}").get_json()
    assert body["form"] == "apply.json" and body["form_schema"]["title"] == "项目申报书"
    assert body["form_schema"]["required"] == ["title", "problems"]
    assert body["instance"] == {
        "id": made["id"],
        "title": "项目申报审批",
        "status": "running",
        "stage": None,
        "revision": made["revision"],
    }
    # B1's members and the party office (role at HQ) see B1's instance and so its task, though they
    # may not act on it; other branches and outsiders get a 404
    for who in ("office", "member1"):
        assert as_user(app, engine, who).get(f"/tasks/{task_id}").status_code == 200, who
    for who in ("sec2", "member3", "outsider"):
        assert as_user(app, engine, who).get(f"/tasks/{task_id}").status_code == 404, who


def test_claim_and_unclaim(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    task_id = start(sec1)["open_tasks"][0]["id"]
    with engine.db.write() as s:
        grant(s, "member1", "B1", "branch_secretary")  # a deputy: the same role in the same branch
    deputy = as_user(app, engine, "member1")
    claimed = sec1.post(f"/tasks/{task_id}/claim")
    assert claimed.status_code == 200
    assert claimed.get_json()["holding"] == "claimed" and claimed.get_json()["assignee"] == "sec1"
    assert sec1.get("/tasks?mine=true").get_json()["items"][0]["id"] == task_id
    assert sec1.post(f"/tasks/{task_id}/claim").status_code == 200  # already mine: fine
    assert deputy.get("/tasks").get_json()["items"] == []
    taken = deputy.post(f"/tasks/{task_id}/claim")
    assert taken.status_code == 409 and error_of(taken)["code"] == "conflict"
    not_yours = deputy.post(f"/tasks/{task_id}/unclaim")
    assert not_yours.status_code == 403 and error_of(not_yours)["code"] == "forbidden"
    released = sec1.post(f"/tasks/{task_id}/unclaim")
    assert released.status_code == 200 and released.get_json()["holding"] == "candidate"
    assert [t["id"] for t in deputy.get("/tasks").get_json()["items"]] == [task_id]
    office = as_user(app, engine, "office")  # sees the task, holds no branch_secretary role
    refused = office.post(f"/tasks/{task_id}/claim")
    assert refused.status_code == 403
    assert as_user(app, engine, "sec2").post(f"/tasks/{task_id}/claim").status_code == 404


def test_complete_validates_and_refuses_conflicts(approval: Api, app: Flask, engine: Engine) -> None:
    sec1 = as_user(app, engine, "sec1")
    made = start(sec1)
    task_id = made["open_tasks"][0]["id"]
    bad = sec1.post(f"/tasks/{task_id}/complete", {"data": {"title": "x", "budget": -1, "extra": 1}})
    assert bad.status_code == 422
    error = error_of(bad)
    assert error["code"] == "validation_failed"
    assert error["details"] == {
        "title": ["'x' is too short"],
        "problems": ["required"],
        "budget": ["-1 is less than the minimum of 0"],
        "extra": ["unknown field"],
    }
    assert sec1.get(f"/instances/{made['id']}").get_json()["revision"] == made["revision"]  # nothing changed
    stale = sec1.post(f"/tasks/{task_id}/complete", {"data": APPLICATION, "revision": made["revision"] - 1})
    assert stale.status_code == 409 and error_of(stale)["code"] == "conflict"
    office = as_user(app, engine, "office")
    assert office.post(f"/tasks/{task_id}/complete", {"data": APPLICATION}).status_code == 403
    done = sec1.post(f"/tasks/{task_id}/complete", {"data": APPLICATION, "revision": made["revision"]})
    assert done.status_code == 200
    after = done.get_json()
    assert after["id"] == made["id"] and after["revision"] > made["revision"]
    assert [t["title"] for t in after["open_tasks"]] == ["完整性审核"]
    twice = sec1.post(f"/tasks/{task_id}/complete", {"data": APPLICATION})
    assert twice.status_code == 409 and error_of(twice)["code"] == "invalid_state"
    finished = sec1.get(f"/tasks/{task_id}").get_json()
    assert finished["state"] == "completed" and finished["completed_by"] == "sec1"
    assert sec1.post("/tasks/999999/complete", {"data": {}}).status_code == 404


# --- messages and audit ---------------------------------------------------------------------------


def _scoring_waiting_for_budget(app: Flask, engine: Engine) -> tuple[Api, int]:
    """scoring.bpmn driven through the API up to its message catch event."""
    designer = as_user(app, engine, "designer")
    assert designer.deploy(*SCORING).status_code == 201
    office = as_user(app, engine, "office")
    made = office.post(
        "/instances", {"process": "scoring", "org": "HQ", "data": {"judges": ["judge1", "judge2"]}}
    )
    assert made.status_code == 201
    instance_id = made.get_json()["id"]
    for judge, points in (("judge1", 90), ("judge2", 80)):
        api = as_user(app, engine, judge)
        [sheet] = api.get("/tasks").get_json()["items"]
        assert sheet["title"] == f"评委打分 · {judge}" and sheet["holding"] == "owner"
        assert api.post(f"/tasks/{sheet['id']}/complete", {"data": {"points": points}}).status_code == 200
    for title in ("准备开标会", "确认收到结果"):
        [task] = [t for t in office.get("/tasks").get_json()["items"] if t["title"] == title]
        assert office.post(f"/tasks/{task['id']}/complete", {"data": {}}).status_code == 200
    state = office.get(f"/instances/{instance_id}").get_json()
    assert state["status"] == "running" and state["open_tasks"] == [] and state["data"]["score"] == 85.0
    return office, instance_id


def test_messages_reach_waiting_instances_the_caller_operates(app: Flask, engine: Engine) -> None:
    office, instance_id = _scoring_waiting_for_budget(app, engine)
    refused = as_user(app, engine, "sec1").post("/messages", {"name": "budget_allocated"})
    assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden"
    with engine.db.write() as s:
        grant(s, "sec2", "B2", "party_office")  # an operator of B2 only: HQ's instance is out of reach
    assert as_user(app, engine, "sec2").post("/messages", {"name": "budget_allocated"}).get_json() == {
        "delivered": []
    }
    assert office.post("/messages", {"name": "budget_allocated", "business_key": "other"}).get_json() == {
        "delivered": []
    }
    sent = office.post("/messages", {"name": "budget_allocated", "payload": {"amount": 5000}})
    assert sent.status_code == 200 and sent.get_json() == {"delivered": [instance_id]}
    final = office.get(f"/instances/{instance_id}").get_json()
    assert final["status"] == "completed" and final["data"]["allocation"] == {"amount": 5000}
    assert office.post("/messages", {"name": "budget_allocated"}).get_json() == {"delivered": []}
    assert office.post("/messages", {"payload": 1}).status_code == 400


def test_instance_audit_trail_pages_and_is_as_private_as_the_instance(
    approval: Api, app: Flask, engine: Engine
) -> None:
    sec1 = as_user(app, engine, "sec1")
    made = start(sec1)
    sec1.post(f"/tasks/{made['open_tasks'][0]['id']}/complete", {"data": APPLICATION})
    events = sec1.get(f"/instances/{made['id']}/audit").get_json()
    actions = [e["action"] for e in events["items"]]
    assert actions[0] == "instance.started" and "task.completed" in actions and events["next_cursor"] is None
    assert all(e["actor"] in ("sec1", "system") for e in events["items"])
    paged, url = [], f"/instances/{made['id']}/audit?limit=2"
    while url:
        page = sec1.get(url).get_json()
        paged += page["items"]
        url = page["next_cursor"] and f"/instances/{made['id']}/audit?limit=2&cursor={page['next_cursor']}"
    assert paged == events["items"]
    assert as_user(app, engine, "sec2").get(f"/instances/{made['id']}/audit").status_code == 404
    assert sec1.get("/instances/424242/audit").status_code == 404


def test_audit_verify_is_for_auditors_and_names_a_tampered_event(
    approval: Api, app: Flask, engine: Engine
) -> None:
    start(as_user(app, engine, "sec1"))
    auditor = as_user(app, engine, "auditor")
    verdict = auditor.get("/audit/verify").get_json()
    assert verdict["ok"] is True and verdict["first_bad_seq"] is None and verdict["checked"] > 3
    refused = as_user(app, engine, "sec1").get("/audit/verify")
    assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden"
    with engine.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory"))
    broken = auditor.get("/audit/verify").get_json()
    assert broken["ok"] is False and broken["first_bad_seq"] == 3


# --- someone else's BPMN, driven to its end with the API alone -------------------------------------


def test_approval_bpmn_driven_to_its_end_as_the_users_its_lanes_name(app: Flask, engine: Engine) -> None:
    """Lanes: branch_secretary (sec1 in B1), party_office (office at HQ). Return once, then reject."""
    designer = as_user(app, engine, "designer")
    assert designer.deploy(*APPROVAL).status_code == 201
    sec1, office = as_user(app, engine, "sec1"), as_user(app, engine, "office")
    instance_id = sec1.post("/instances", {"process": "approval", "org": "B1"}).get_json()["id"]

    def only(api: Api) -> dict[str, Any]:
        [task] = api.get("/tasks?process=approval").get_json()["items"]
        return task

    def complete(api: Api, data: dict[str, Any]) -> dict[str, Any]:
        task = api.get(f"/tasks/{only(api)['id']}").get_json()
        response = api.post(
            f"/tasks/{task['id']}/complete", {"data": data, "revision": task["instance"]["revision"]}
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    assert office.get("/tasks").get_json()["items"] == []
    complete(sec1, APPLICATION)
    state = complete(office, {"verdict": "return", "comment": "请补充预算明细"})
    assert [t["lane"] for t in state["open_tasks"]] == ["branch_secretary"]
    complete(sec1, {**APPLICATION, "budget": 8000})
    final = complete(office, {"verdict": "reject", "comment": "不予立项"})
    assert final["status"] == "completed" and final["open_tasks"] == []
    assert final["data"]["budget"] == 8000 and final["data"]["verdict"] == "reject"
    assert sec1.get(f"/instances/{instance_id}").get_json()["status"] == "completed"
    assert sec1.get("/tasks").get_json()["items"] == [] and office.get("/tasks").get_json()["items"] == []
    assert_chain_intact(engine)


def test_scoring_bpmn_with_a_message_driven_to_its_end(app: Flask, engine: Engine) -> None:
    office, instance_id = _scoring_waiting_for_budget(app, engine)
    assert office.post("/messages", {"name": "budget_allocated", "payload": 1}).get_json() == {
        "delivered": [instance_id]
    }
    assert office.get(f"/instances/{instance_id}").get_json()["status"] == "completed"
    assert_chain_intact(engine)
