"""Delegate, suspend, resume and terminate from the pages, as the seeded test directory's people.

sec1 is B1's secretary, sec2 B2's, office the party office at HQ above both, member1 a member of B1.
The engine's rules are tested in test_engine_paths; these check the pages offer the actions only
to those allowed, refuse everyone else (403, or 404 where the instance is not theirs to see), keep
a person's mistakes on the page as messages, and leave each action in the audit trail.
"""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from engine import Engine
from engine.directory import deactivate_user, grant, user_by_name
from engine.models import AuditEvent, HumanTask, Instance
from tests.helpers import assert_chain_intact, files, inbox_of, only_task
from tests.web import post, sign_in

APPROVAL = ("approval.bpmn", "apply.json", "review.json")


def started(engine: Engine) -> Instance:
    engine.deploy(files(*APPROVAL), "designer")
    return engine.start("approval", "sec1", "B1", {"title": "红旗党建"})


def status(engine: Engine, instance_id: int) -> str:
    with engine.db.read() as s:
        return s.get(Instance, instance_id).status


def actions(engine: Engine, instance_id: int) -> list[str]:
    with engine.db.read() as s:
        query = (
            select(AuditEvent.action).where(AuditEvent.instance_id == instance_id).order_by(AuditEvent.seq)
        )
        return list(s.execute(query).scalars())


def page(client: FlaskClient, url: str) -> str:
    response = client.get(url, follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_office_suspends_resumes_and_terminates_with_a_reason(engine: Engine, web_app: Flask) -> None:
    inst = started(engine)
    office = sign_in(web_app, "office")
    url = f"/instances/{inst.id}"
    assert "暂停流程" in page(office, url) and "终止流程" in page(office, url)

    post(office, f"{url}/suspend", {"reason": "材料待核实"})
    assert status(engine, inst.id) == "suspended"
    shown = page(office, url)
    assert "已暂停" in shown and "恢复流程" in shown and "暂停流程" not in shown
    post(office, f"{url}/resume", {"reason": "已核实"})
    assert status(engine, inst.id) == "running"

    refused = post(office, f"{url}/terminate", {"reason": "重复申报"}, follow_redirects=True)
    assert "终止流程须填写原因并勾选确认" in refused.get_data(as_text=True)
    assert status(engine, inst.id) == "running"
    post(office, f"{url}/terminate", {"reason": "重复申报", "confirm": "yes"})
    assert status(engine, inst.id) == "terminated"
    assert "暂停流程" not in page(office, url)
    stale = post(office, f"{url}/suspend", {"reason": "旧页面"}, follow_redirects=True)
    assert "流程状态已变化" in stale.get_data(as_text=True)
    assert {"instance.suspended", "instance.resumed", "instance.terminated"} <= set(actions(engine, inst.id))
    assert_chain_intact(engine)


def test_only_the_office_above_may_supervise_an_instance(engine: Engine, web_app: Flask) -> None:
    inst = started(engine)
    url = f"/instances/{inst.id}"
    secretary = sign_in(web_app, "sec1")
    assert "暂停流程" not in page(secretary, url)
    for verb in ("suspend", "resume", "terminate"):
        assert post(secretary, f"{url}/{verb}", {"reason": "x", "confirm": "yes"}).status_code == 403
        assert post(sign_in(web_app, "sec2"), f"{url}/{verb}", {"reason": "x"}).status_code == 404
    assert status(engine, inst.id) == "running"


def test_a_task_is_delegated_only_to_someone_who_may_do_it(engine: Engine, web_app: Flask) -> None:
    inst = started(engine)
    with engine.db.write() as s:  # a deputy secretary: someone else the application could go to
        grant(s, "member1", "B1", "branch_secretary")
    task = only_task(engine, "sec1")
    secretary = sign_in(web_app, "sec1")
    assert "转交他人办理" not in page(secretary, f"/tasks/{task.id}")  # offered to the role: claim first
    assert post(secretary, f"/inbox/tasks/{task.id}/claim").status_code == 302
    shown = page(secretary, f"/tasks/{task.id}")
    assert "转交他人办理" in shown and '<option value="member1">' in shown

    for nobody in ("sec2", "member2", "ghost"):  # another branch; not a secretary; no such user
        wrong = post(secretary, f"/tasks/{task.id}/delegate", {"to": nobody}, follow_redirects=True)
        assert f"不能转交给“{nobody}”" in wrong.get_data(as_text=True)
    assert post(secretary, f"/tasks/{task.id}/delegate", {"to": "member1"}).status_code == 302
    with engine.db.read() as s:
        row = s.get(HumanTask, task.id)
        assert (row.assignee_id is not None, row.assignment) == (True, "delegated")
    assert only_task(engine, "member1").id == task.id
    assert "task.delegated" in actions(engine, inst.id)

    # sec1 no longer holds it and is no supervisor: neither the form nor the action
    assert "转交他人办理" not in page(secretary, f"/tasks/{task.id}")
    assert post(secretary, f"/tasks/{task.id}/delegate", {"to": "sec1"}).status_code == 403
    assert post(sign_in(web_app, "sec2"), f"/tasks/{task.id}/delegate", {"to": "sec2"}).status_code == 404
    # the office above may take it back to the secretary
    office = sign_in(web_app, "office")
    assert post(office, f"/tasks/{task.id}/delegate", {"to": "sec1"}).status_code == 302
    assert only_task(engine, "sec1").id == task.id


def test_deactivating_a_person_returns_their_claimed_tasks_to_the_pool(engine: Engine) -> None:
    first = started(engine)
    second = engine.start("approval", "sec1", "B1", {"title": "先锋岗"})
    with engine.db.write() as s:
        grant(s, "member1", "B1", "branch_secretary")
    claimed = [t for t in inbox_of(engine, "member1") if t.instance_id in (first.id, second.id)]
    for task in claimed:
        engine.claim(task.id, "member1")

    with engine.db.write() as s:
        deactivate_user(s, "office", user_by_name(s, "member1"))

    with engine.db.read() as s:
        rows = [s.get(HumanTask, t.id) for t in claimed]
    assert [(r.assignee_id, r.assignment) for r in rows] == [(None, None)] * 2
    assert {t.id for t in inbox_of(engine, "sec1")} >= {t.id for t in claimed}  # the pool sees them again
    assert actions(engine, first.id).count("task.released") == 1
    assert_chain_intact(engine)
