"""/incidents: who sees which incidents, and retry / resolve from the page, audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from engine import Engine
from engine.directory import add_user, grant
from engine.models import AuditEvent, Incident, Job, User
from engine.runtime import MAX_JOB_ATTEMPTS
from tests.helpers import assert_chain_intact, files, only_task
from tests.web import PASSWORD, post, sign_in
from web.passwords import hash_password

FRAGILE = ("fragile.bpmn", "fragile.json")


@pytest.fixture
def script_incident(engine: Engine) -> tuple[int, int]:
    """(instance, incident): a script divided by zero and stopped the instance (B1)."""
    engine.deploy(files(*FRAGILE), "designer")
    inst = engine.start("fragile", "sec1", "B1")
    engine.complete(only_task(engine, "sec1", "enter").id, "sec1", {"total": 1200, "count": 0})
    (incident,) = engine.instance(inst.id).incidents
    return inst.id, incident.id


def job_incident(engine: Engine, instance_id: int) -> int:
    """A job that fails every time (a kind no worker knows) until it is an incident."""
    now = datetime.now(UTC)
    with engine.db.write() as s:
        s.add(Job(instance_id=instance_id, kind="census", due_at=now))
    for _ in range(MAX_JOB_ATTEMPTS):
        assert engine.run_due_jobs(now) == 1
        with engine.db.read() as s:
            job = s.execute(select(Job).where(Job.kind == "census")).scalar_one()
        now = job.lease_until + timedelta(seconds=1)
    with engine.db.read() as s:
        return s.execute(select(Incident.id).where(Incident.kind == "job")).scalar_one()


def trail(engine: Engine, action: str) -> list[AuditEvent]:
    with engine.db.read() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


@pytest.mark.parametrize("who", ["sec1", "member1", "secretary", "auditor", "outsider"])
def test_only_the_party_office_and_admins_get_the_pages(
    web_app: Flask, script_incident: tuple[int, int], who: str
) -> None:
    _inst, incident = script_incident
    client = sign_in(web_app, who)
    assert client.get("/incidents/").status_code == 403
    assert client.get(f"/incidents/{incident}").status_code == 403
    assert post(client, f"/incidents/{incident}/retry").status_code == 403
    assert post(client, f"/incidents/{incident}/resolve", {"comment": "x"}).status_code == 403


def test_the_office_sees_the_incident_with_its_error_and_instance(
    web_app: Flask, script_incident: tuple[int, int]
) -> None:
    inst, incident = script_incident
    client = sign_in(web_app, "office")
    page = client.get("/incidents/").get_data(as_text=True)
    assert f'data-incident="{incident}"' in page and "ZeroDivisionError" in page and "脚本错误" in page
    assert f"/instances/{inst}" in page or f"#{inst}" in page
    detail = client.get(f"/incidents/{incident}")
    text = detail.get_data(as_text=True)
    assert detail.status_code == 200 and "ZeroDivisionError" in text and "流程已暂停" in text
    assert f'action="/incidents/{incident}/retry"' in text
    assert f'action="/incidents/{incident}/resolve"' not in text  # it stops the instance: retry only
    assert client.get("/incidents/?state=resolved").get_data(as_text=True).count("data-incident=") == 0


def test_an_office_of_another_branch_neither_sees_nor_touches_it(
    web_app: Flask, engine: Engine, script_incident: tuple[int, int]
) -> None:
    _inst, incident = script_incident
    with engine.db.write() as s:
        add_user(s, "office2", "二支部党务")
        grant(s, "office2", "B2", "party_office")
        s.execute(
            User.__table__.update()
            .where(User.username == "office2")
            .values(password_hash=hash_password(PASSWORD))
        )
    client = sign_in(web_app, "office2")
    assert client.get("/incidents/").get_data(as_text=True).count("data-incident=") == 0
    assert client.get(f"/incidents/{incident}").status_code == 404
    assert post(client, f"/incidents/{incident}/retry").status_code == 404
    assert engine.instance(_inst).status == "failed"


def test_retry_with_corrected_data_resumes_the_instance_and_is_audited(
    web_app: Flask, engine: Engine, script_incident: tuple[int, int]
) -> None:
    inst, incident = script_incident
    client = sign_in(web_app, "office")
    bad = post(client, f"/incidents/{incident}/retry", {"data": "count = 4"})
    assert bad.status_code == 400 and "JSON" in bad.get_data(as_text=True)
    assert engine.instance(inst).status == "failed"  # nothing happened

    done = post(client, f"/incidents/{incident}/retry", {"data": '{"count": 4}'})
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/incidents/{incident}")
    view = engine.instance(inst)
    assert view.status == "running" and view.incidents == []
    (event,) = trail(engine, "incident.retried")
    assert (event.actor, event.payload["incident"], event.payload["data"]) == (
        "office",
        incident,
        {"count": 4},
    )
    page = client.get(f"/incidents/{incident}").get_data(as_text=True)
    assert 'data-state="resolved"' in page and 'data-action="incident.retried"' in page
    again = post(client, f"/incidents/{incident}/retry")
    assert again.status_code == 409 and "无法重试" in again.get_data(as_text=True)
    assert_chain_intact(engine)


def test_a_job_incident_is_resolved_with_a_comment_without_running_anything(
    web_app: Flask, engine: Engine
) -> None:
    engine.deploy(files("approval.bpmn", "apply.json", "review.json"), "designer")
    inst = engine.start("approval", "sec1", "B1").id
    incident = job_incident(engine, inst)
    client = sign_in(web_app, "office")
    page = client.get("/incidents/").get_data(as_text=True)
    assert "后台任务失败" in page and "unknown job kind" in page and "已尝试 5 次" in page

    assert post(client, f"/incidents/{incident}/resolve", {"comment": "  "}).status_code == 400
    response = post(client, f"/incidents/{incident}/resolve", {"comment": "统计任务已废止，无需重试"})
    assert response.status_code == 302
    (event,) = trail(engine, "incident.resolved")
    assert event.actor == "office" and event.payload["comment"] == "统计任务已废止，无需重试"
    assert event.instance_id == inst
    with engine.db.read() as s:
        job = s.execute(select(Job).where(Job.kind == "census")).scalar_one()
        assert s.get(Incident, incident).state == "resolved" and job.state == "failed"
    resolved = client.get("/incidents/?state=resolved").get_data(as_text=True)
    assert f'data-incident="{incident}"' in resolved
    assert post(client, f"/incidents/{incident}/resolve", {"comment": "再次"}).status_code == 409
    assert_chain_intact(engine)


def test_an_incident_that_stops_its_instance_cannot_be_resolved_away(
    web_app: Flask, engine: Engine, script_incident: tuple[int, int]
) -> None:
    inst, incident = script_incident
    client = sign_in(web_app, "office")
    response = post(client, f"/incidents/{incident}/resolve", {"comment": "不处理"})
    assert response.status_code == 409 and "retry" in response.get_data(as_text=True)
    assert engine.instance(inst).status == "failed" and trail(engine, "incident.resolved") == []


def test_unknown_incidents_are_404(web_app: Flask, script_incident: tuple[int, int]) -> None:
    client = sign_in(web_app, "office")
    assert client.get("/incidents/999999").status_code == 404
    assert post(client, "/incidents/999999/resolve", {"comment": "x"}).status_code == 404
