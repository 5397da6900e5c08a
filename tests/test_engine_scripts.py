"""Untrusted scripts inside running processes: refused or stopped, recorded as incidents, harmless."""

from __future__ import annotations

import time
from datetime import UTC

import pytest

from engine import BundleInvalid, Engine
from engine.queries import instance_view
from tests.conftest import FIXTURES
from tests.helpers import actions, assert_chain_intact, inbox_of

SCRIPTS = FIXTURES / "scripts"


def deploy(engine: Engine, name: str) -> None:
    engine.deploy({f"{name}.bpmn": (SCRIPTS / f"{name}.bpmn").read_bytes()}, "designer")


def test_an_endless_script_is_stopped_and_becomes_an_incident(engine: Engine) -> None:
    deploy(engine, "spin")
    deploy(engine, "calc")
    spin = engine.start("spin", "member1", "B1")
    calc = engine.start("calc", "member1", "B1")

    spin_task, calc_task = inbox_of(engine, "member1")
    assert (spin_task.instance_id, calc_task.instance_id) == (spin.id, calc.id)
    began = time.monotonic()
    engine.complete(spin_task.id, "member1", {})
    assert time.monotonic() - began < 10  # the budget is 1 s in tests; the point is it stops

    with engine.db.read() as s:
        failed = instance_view(s, spin.id)
    assert failed.status == "failed"
    (incident,) = failed.incidents
    assert incident.kind == "script_timeout" and "ScriptTimeout" in incident.message
    assert "incident.raised" in actions(engine, spin.id)

    # the process, and other instances, still work
    engine.complete(calc_task.id, "member1", {})
    with engine.db.read() as s:
        done = instance_view(s, calc.id)
    assert done.status == "completed" and done.data["total"] == 328350
    assert_chain_intact(engine)


def test_a_dunder_walk_is_refused_at_deploy_time(engine: Engine) -> None:
    with pytest.raises(BundleInvalid) as caught:
        deploy(engine, "walk")
    (problem,) = caught.value.problems
    assert problem.element == "work" and "__subclasses__' is not allowed" in problem.message


def test_scripts_see_the_moment_their_command_runs_at(engine: Engine) -> None:
    """A timer fired for a later moment runs its scripts at that moment, not at the wall clock."""
    from datetime import datetime

    fixed = datetime(2030, 1, 31, 9, 0, tzinfo=UTC)
    clocked = Engine(engine.db, clock=lambda: fixed)
    clocked.deploy({"clock.bpmn": (SCRIPTS / "clock.bpmn").read_bytes()}, "designer")
    inst = clocked.start("clock", "member1", "B1")
    assert clocked.instance(inst.id).data["seen"] == "2030-01-31T09:00:00+00:00"
