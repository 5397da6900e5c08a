"""The process designer pages (/designer): access, version list and diff, validate, deploy, migration."""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from engine import Engine
from engine.models import AuditEvent, Definition, Instance
from tests.helpers import files, only_task
from tests.lifecycle_helpers import lifecycle_files
from tests.test_migration_instances import APPLICATION, APPROVAL, second_look, without_apply
from tests.web import csrf, post, sign_in

CAMUNDA = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="d" targetNamespace="http://bpmn.io/schema/bpmn"
    exporter="Camunda Modeler" exporterVersion="5.20.0">
  <bpmn:process id="camunda_demo" name="Camunda 示例" isExecutable="true" camunda:historyTimeToLive="180">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="approve" />
    <bpmn:userTask id="approve" name="审批" camunda:assignee="${starter}" />
    <bpmn:sequenceFlow id="f2" sourceRef="approve" targetRef="notify" />
    <bpmn:serviceTask id="notify" name="发送通知" camunda:class="com.example.NotifyDelegate" />
    <bpmn:sequenceFlow id="f3" sourceRef="notify" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"""


def post_json(client: FlaskClient, url: str, body: dict) -> tuple[int, dict]:
    response = client.post(url, json=body, headers={"X-CSRFToken": csrf(client, "/")})
    return response.status_code, response.get_json()


@pytest.fixture
def approval(engine: Engine) -> Definition:
    return engine.deploy(files(*APPROVAL), "designer")


def approval_xml(change=lambda t: t) -> str:  # type: ignore[no-untyped-def]
    return change(files("approval.bpmn")["approval.bpmn"].decode())


def test_every_designer_endpoint_refuses_others(web_app: Flask, engine: Engine, approval: Definition) -> None:
    engine.deploy({**files(*APPROVAL), "approval.bpmn": approval_xml(second_look)}, "designer")
    gets = [
        "/designer/",
        "/designer/diff?key=approval&a=1&b=2",
        "/designer/edit?key=approval&version=1",
        "/designer/edit",
        "/designer/version.bpmn?key=approval&version=1",
        "/designer/new.bpmn",
        "/designer/migrate?key=approval&from=1&to=2",
        "/designer/draft.bpmn?key=approval",
    ]
    posts = ["/designer/validate", "/designer/deploy", "/designer/migrate", "/designer/draft"]
    for username in ("outsider", "office", "member1"):
        client = sign_in(web_app, username)
        for url in gets:
            assert client.get(url).status_code == 403, (username, url)
        for url in posts:
            assert post_json(client, url, {"xml": approval_xml()})[0] == 403, (username, url)
            assert post(client, url, {"key": "approval", "from": "1", "to": "2"}).status_code == 403, (
                username,
                url,
            )
    anonymous = web_app.test_client()
    assert anonymous.get("/designer/").status_code in (302, 401)


def test_version_list_and_diff(web_app: Flask, engine: Engine, approval: Definition) -> None:
    engine.deploy({**files(*APPROVAL), "approval.bpmn": approval_xml(second_look)}, "designer")
    client = sign_in(web_app, "designer")
    page = client.get("/designer/").get_data(as_text=True)
    assert "approval" in page and "v2" in page and "v1" in page and "designer" in page
    assert "/designer/diff?key=approval&amp;a=1&amp;b=2" in page
    diff = client.get("/designer/diff?key=approval&a=1&b=2").get_data(as_text=True)
    added = diff.split("新增的元素")[1].split("</section>")[0]
    assert "recheck" in added and "复核" in added and "f3b" in added
    changed = diff.split("修改的元素")[1].split("</section>")[0]
    assert "f3" in changed and "lane_office" in changed and "count" not in changed
    assert "删除的元素" not in diff
    assert client.get("/designer/diff?key=approval&a=1&b=9").status_code == 404


def test_modeler_page_and_xml(web_app: Flask, approval: Definition) -> None:
    client = sign_in(web_app, "designer")
    response = client.get("/designer/edit?key=approval&version=1")
    assert response.status_code == 200
    assert "'unsafe-inline'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    assert "bpmn-modeler.production.min.js" in html and "js/designer.js" in html
    assert "<script>" not in html and " style=" not in html
    assert "apply.json" in html and "review.json" in html and "lifecycle_application.json" in html
    assert "party_office" in html  # lane roles for the panel
    xml = client.get("/designer/version.bpmn?key=approval&version=1")
    assert xml.mimetype == "application/xml" and b'id="approval"' in xml.data
    assert client.get("/designer/version.bpmn?key=approval&version=7").status_code == 404
    assert b"<bpmn:process" in client.get("/designer/new.bpmn").data


def labels(html: str) -> dict[str, str]:
    found = re.search(r"data-labels='([^']*)'", html)
    assert found
    return json.loads(found.group(1))


def test_modeler_page_carries_decisions_and_palette_labels_in_the_user_locale(
    web_app: Flask, approval: Definition
) -> None:
    client = sign_in(web_app, "designer")
    latest = client.get("/designer/edit?key=approval").get_data(as_text=True)  # no version: the newest
    assert "version=1" in latest
    assert "lifecycle_initiation" in latest and "org_grading_weights" in latest  # workflows/*.dmn
    assert labels(latest)["Create task"] == "创建任务"  # bpmn-js's translate service reads these
    assert client.get("/designer/edit?key=nothing_here").status_code == 404
    with client.session_transaction() as session:
        session["lang"] = "en"
    english = client.get("/designer/edit?key=approval").get_data(as_text=True)
    assert labels(english)["Create task"] == "Create task"


def test_validate_reports_problems_with_element_ids(web_app: Flask, approval: Definition) -> None:
    client = sign_in(web_app, "designer")
    broken = approval_xml(
        lambda t: t.replace('value="review.json"', 'value="missing.json"', 1).replace(
            'verdict == "return"', "__import__('os')"
        )
    )
    status, body = post_json(client, "/designer/validate", {"xml": broken, "key": "approval", "version": 1})
    assert status == 200
    elements = {p["element"] for p in body["problems"]}
    assert {"review", "f_return"} <= elements
    assert any("missing.json" in p["message"] for p in body["problems"])

    status, body = post_json(
        client, "/designer/validate", {"xml": approval_xml(), "key": "approval", "version": 1}
    )
    assert (status, body["problems"]) == (200, [])
    status, body = post_json(client, "/designer/validate", {"xml": "<not xml"})
    assert status == 200 and body["problems"] and "well-formed" in body["problems"][0]["message"]
    assert post_json(client, "/designer/validate", {})[0] == 400


def test_validate_lifecycle_has_no_problems(web_app: Flask, engine: Engine) -> None:
    lifecycle = engine.deploy(lifecycle_files(), "designer")
    client = sign_in(web_app, "designer")
    xml = client.get(f"/designer/version.bpmn?key=project_lifecycle&version={lifecycle.version}").get_data(
        as_text=True
    )
    body = {"xml": xml, "key": "project_lifecycle", "version": lifecycle.version}
    status, result = post_json(client, "/designer/validate", body)
    assert (status, result["problems"]) == (200, [])
    # a new diagram picks its forms from forms/: the lifecycle without a base version validates too
    status, result = post_json(client, "/designer/validate", {"xml": xml})
    assert (status, result["problems"]) == (200, [])


def test_camunda_diagram_gets_messages_not_a_crash(web_app: Flask) -> None:
    client = sign_in(web_app, "designer")
    status, body = post_json(client, "/designer/validate", {"xml": CAMUNDA})
    assert status == 200
    assert any(p["element"] == "notify" for p in body["problems"])
    warned = {(w["element"], w["message"]) for w in body["warnings"]}
    assert any(e == "notify" and "class" in m and "Camunda" in m for e, m in warned)
    assert any(e == "approve" and "assignee" in m for e, m in warned)
    status, body = post_json(client, "/designer/deploy", {"xml": CAMUNDA})
    assert status == 422 and body["problems"]


def test_deploy_creates_next_version_audited(web_app: Flask, engine: Engine, approval: Definition) -> None:
    client = sign_in(web_app, "designer")
    body = {"xml": approval_xml(second_look), "key": "approval", "version": 1}
    status, result = post_json(client, "/designer/deploy", body)
    assert status == 200 and result["version"] == 2 and result["problems"] == []
    with engine.db.read() as s:
        v2 = s.execute(select(Definition).where(Definition.version == 2)).scalar_one()
        assert v2.deployed_by == "designer"
        assert set(v2.sources) == {"approval.bpmn", "apply.json", "review.json"}  # forms from v1
        event = (
            s.execute(
                select(AuditEvent)
                .where(AuditEvent.action == "definition.deployed")
                .order_by(AuditEvent.seq.desc())
            )
            .scalars()
            .first()
        )
    assert event.actor == "designer" and event.payload["version"] == 2
    status, again = post_json(client, "/designer/deploy", body)  # same content: no new version
    assert status == 200 and again["version"] == 2 and "没有产生新版本" in again["message"]
    # a broken diagram is refused with its problems, nothing stored
    broken = approval_xml(lambda t: t.replace('value="review.json"', 'value="missing.json"', 1))
    status, result = post_json(client, "/designer/deploy", {**body, "xml": broken})
    assert status == 422 and result["problems"][0]["element"] == "review"


def test_migration_dry_run_and_migrate_all(web_app: Flask, engine: Engine, approval: Definition) -> None:
    at_apply = engine.start("approval", "sec1", "B1")
    at_review = engine.start("approval", "sec1", "B1", business_key="second")
    engine.complete(
        [t for t in _open(engine, at_review.id) if t.task_spec == "apply"][0].id, "sec1", APPLICATION
    )
    engine.deploy(
        {**files(*APPROVAL), "approval.bpmn": approval_xml(lambda t: without_apply(second_look(t)))},
        "designer",
    )
    client = sign_in(web_app, "designer")
    page = client.get("/designer/migrate?key=approval&from=1&to=2").get_data(as_text=True)
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"#(\d+)</a>(.*?)</tr>", page, re.S)}
    assert "可以迁移" in rows[at_review.id] and "不能迁移" in rows[at_apply.id]
    assert "apply" in rows[at_apply.id] and "已删除" in rows[at_apply.id]
    response = post(client, "/designer/migrate", {"key": "approval", "from": "1", "to": "2"})
    assert response.status_code == 302
    with engine.db.read() as s:
        v2 = s.execute(select(Definition.id).where(Definition.version == 2)).scalar_one()
        assert s.get(Instance, at_review.id).definition_id == v2
        assert s.get(Instance, at_apply.id).definition_id != v2
    engine.complete(only_task(engine, "office", "review").id, "office", {"verdict": "reject"})
    recheck = [t for t in _open(engine, at_review.id) if t.task_spec == "recheck"][0]
    engine.complete(recheck.id, "office", {})
    with engine.db.read() as s:
        assert s.get(Instance, at_review.id).status == "completed"


def _open(engine: Engine, instance_id: int):  # type: ignore[no-untyped-def]
    from tests.test_migration_instances import only_tasks

    return only_tasks(engine, instance_id)


def test_draft_is_kept_per_user_and_dropped_on_deploy(web_app: Flask, approval: Definition) -> None:
    client = sign_in(web_app, "designer")
    draft = approval_xml(second_look)
    assert client.get("/designer/draft.bpmn?key=approval").status_code == 404
    assert post_json(client, "/designer/draft", {"xml": draft, "key": "approval"})[0] == 200
    assert client.get("/designer/draft.bpmn?key=approval").get_data(as_text=True) == draft
    page = client.get("/designer/edit?key=approval&version=1").get_data(as_text=True)
    assert "打开草稿" in page
    opened = client.get("/designer/edit?key=approval&version=1&draft=1").get_data(as_text=True)
    assert "/designer/draft.bpmn?key=approval" in opened
    status, body = post_json(
        client, "/designer/draft", {"xml": '<!DOCTYPE x [<!ENTITY a "b">]><x/>', "key": "x"}
    )
    assert status == 400 and "DOCTYPE" in body["problems"][0]["message"]
    assert post_json(client, "/designer/draft", {"xml": draft, "key": "../etc"})[0] == 400
    status, _ = post_json(client, "/designer/deploy", {"xml": draft, "key": "approval", "version": 1})
    assert status == 200
    assert client.get("/designer/draft.bpmn?key=approval").status_code == 404
