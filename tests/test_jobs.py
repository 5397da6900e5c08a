"""Due jobs: fired once through the unit of work; failures back off, then become an incident."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from engine import Engine
from engine.models import Incident, Job
from engine.runtime import MAX_JOB_ATTEMPTS
from tests.helpers import actions, assert_chain_intact, files, later, only_task

APPROVAL = ("approval.bpmn", "apply.json", "review.json")


def waiting_on_cool_off(engine: Engine) -> int:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    engine.complete(only_task(engine, "sec1").id, "sec1", {"title": "定时测试", "problems": ["问题"]})
    engine.complete(only_task(engine, "office").id, "office", {"verdict": "approve"})
    return inst.id


def job_of(engine: Engine, instance_id: int) -> Job:
    with engine.db.read() as s:
        return s.execute(select(Job).where(Job.instance_id == instance_id)).scalar_one()


def test_a_due_timer_fires_once(engine: Engine) -> None:
    inst = waiting_on_cool_off(engine)
    assert engine.run_due_jobs(later(6)) == 1
    assert engine.run_due_jobs(later(7)) == 0
    assert job_of(engine, inst).state == "done"
    assert actions(engine, inst).count("timer.fired") == 1
    only_task(engine, "secretary", "sign")


def test_a_failing_job_backs_off_then_raises_one_incident_and_retry_resumes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst = waiting_on_cool_off(engine)

    def broken(*_args: object) -> None:
        raise ConnectionError("the mail relay is down")

    monkeypatch.setattr(engine, "_fire", broken)
    now = later(6)
    for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
        assert engine.run_due_jobs(now) == 1
        job = job_of(engine, inst)
        assert job.attempts == attempt and "mail relay" in (job.last_error or "")
        assert engine.run_due_jobs(now) == 0  # backing off: not due again yet
        now = job.lease_until + timedelta(seconds=1) if job.lease_until else now
    assert job_of(engine, inst).state == "failed"
    assert engine.run_due_jobs(now + timedelta(days=1)) == 0
    with engine.db.read() as s:
        (incident,) = s.execute(select(Incident)).scalars()
    assert incident.kind == "job" and "mail relay" in incident.message

    monkeypatch.undo()
    engine.retry_incident(incident.id, "office")
    assert engine.run_due_jobs(now) == 1
    only_task(engine, "secretary", "sign")
    assert "incident.retried" in actions(engine)
    assert_chain_intact(engine)
