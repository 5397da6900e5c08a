"""Failures stop an instance with an incident; the party office retries it; nothing half-done survives."""

from __future__ import annotations

import pytest

from engine import Engine, Forbidden, InvalidState
from engine.errors import ScriptFailed
from tests.helpers import actions, assert_chain_intact, files, later, only_task

FRAGILE = ("fragile.bpmn", "fragile.json")


@pytest.fixture
def failed(engine: Engine) -> tuple[Engine, int]:
    """An instance whose script divided by zero while its other branch waits on a one-day timer."""
    engine.deploy(files(*FRAGILE), "designer")
    inst = engine.start("fragile", "sec1", "B1")
    engine.complete(only_task(engine, "sec1", "enter").id, "sec1", {"total": 1200, "count": 0})
    return engine, inst.id


def test_a_failing_script_stops_the_instance_and_holds_its_timers(failed: tuple[Engine, int]) -> None:
    engine, inst = failed
    view = engine.instance(inst)
    assert view.status == "failed"
    (incident,) = view.incidents
    assert incident.kind == "script" and "ZeroDivisionError" in incident.message
    assert engine.run_due_jobs(later(2)) == 0  # held: a stopped instance does not move on its own


def test_the_office_retries_with_corrected_data_and_the_instance_resumes(failed: tuple[Engine, int]) -> None:
    engine, inst = failed
    (incident,) = engine.instance(inst).incidents
    with pytest.raises(Forbidden):
        engine.retry_incident(incident.id, "sec1")
    engine.retry_incident(incident.id, "office", {"count": 4})
    view = engine.instance(inst)
    assert view.status == "running" and view.incidents == []
    assert [t.task_spec for t in view.open_tasks] == ["check"]
    with pytest.raises(InvalidState):
        engine.retry_incident(incident.id, "office")
    assert engine.run_due_jobs(later(2)) == 1  # the held timer is back
    engine.complete(only_task(engine, "sec1", "note").id, "sec1", {})
    assert "incident.retried" in actions(engine, inst)
    assert_chain_intact(engine)


def test_a_step_that_fails_on_submit_refuses_the_submission_and_keeps_nothing(engine: Engine) -> None:
    engine.deploy(files(*FRAGILE), "designer")
    inst = engine.start("fragile", "sec1", "B1")
    engine.complete(only_task(engine, "sec1", "enter").id, "sec1", {"total": 1200, "count": 3})
    check = only_task(engine, "sec1", "check")
    revision = engine.instance(inst.id).revision
    before = actions(engine)
    with pytest.raises(ScriptFailed, match="could not accept"):
        engine.complete(check.id, "sec1", {})
    assert engine.instance(inst.id).revision == revision
    assert actions(engine) == before
    assert only_task(engine, "sec1", "check").id == check.id


def test_form_defaults_fill_missing_fields(engine: Engine) -> None:
    engine.deploy(files(*FRAGILE), "designer")
    inst = engine.start("fragile", "sec1", "B1")
    engine.complete(only_task(engine, "sec1", "enter").id, "sec1", {"total": 100, "count": 4})
    assert engine.instance(inst.id).data["note"] == "无"
