"""The worker on whichever backend the ``db`` fixture gives: wake-ups, clean stops, back-off, odd jobs.

The many-process races are in tests/test_worker_pg.py; here one process, real threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from engine import Engine
from engine.models import Instance, Job
from engine.runtime import BACKOFF_BASE, Lease
from engine.worker import Worker, next_due
from tests.helpers import actions, assert_chain_intact, files, later
from web.ticker import DueJobTicker

ROOT = Path(__file__).resolve().parent.parent


def tick(engine: Engine, due: datetime) -> int:
    """An instance of tests/fixtures/tick.bpmn (deployed by the test) waiting for its timer at ``due``."""
    return engine.start("tick", "sec1", "B1", {"due": due.isoformat(), "fired": 0}).id


def status(engine: Engine, instance_id: int) -> str:
    with engine.db.read() as s:
        return s.get(Instance, instance_id).status


def wait_until(check, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_sleeping_worker_is_woken_for_a_timer_written_after_it_went_to_sleep(engine: Engine) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    worker = Worker(engine, "sleepy", poll_max=300)  # left to its poll, it would look again in 5 minutes
    worker.start()
    try:
        time.sleep(0.5)  # the lane reads the empty table and goes to sleep
        inst = tick(engine, datetime.now(UTC) + timedelta(seconds=1))
        assert wait_until(lambda: status(engine, inst) == "completed", 60), "the timer did not fire"
    finally:
        worker.stop()
        assert worker.join(10)
    assert actions(engine, inst).count("timer.fired") == 1
    assert_chain_intact(engine)


def test_next_due_sees_the_earliest_claimable_moment(engine: Engine) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    now = datetime.now(UTC)
    assert next_due(engine, now) is None
    first = tick(engine, now + timedelta(hours=2))
    tick(engine, now + timedelta(hours=3))  # its instance id is first + 1
    assert next_due(engine, now) == _job(engine, first).due_at
    second = _job(engine, first + 1).due_at
    for lease_end, expected in (
        (now + timedelta(hours=1), now + timedelta(hours=1)),
        (now + timedelta(hours=4), second),
    ):
        with engine.db.write() as s:  # the first is due and someone holds it: its lease end is what counts
            s.execute(
                update(Job)
                .where(Job.instance_id == first)
                .values(due_at=now - timedelta(hours=1), lease_owner="w", lease_until=lease_end)
            )
        assert next_due(engine, now) == expected


def _job(engine: Engine, instance_id: int) -> Job:
    with engine.db.read() as s:
        return s.execute(select(Job).where(Job.instance_id == instance_id)).scalar_one()


def test_stopping_finishes_the_job_in_hand_and_gives_back_the_rest(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    instances = [tick(engine, datetime.now(UTC) + timedelta(days=1)) for _ in range(3)]
    worker = Worker(engine, "w", batch=10)
    run_job = engine.run_job

    def stop_during_the_first(lease: Lease, now: datetime, owner: str) -> str:
        worker.stop()  # SIGTERM arrives while the first job runs
        return run_job(lease, now, owner)

    monkeypatch.setattr(engine, "run_job", stop_during_the_first)
    engine.clock = lambda: datetime.now(UTC) + timedelta(days=2)
    assert worker.run_once() == 3
    jobs = [_job(engine, i) for i in instances]
    assert [j.state for j in jobs] == ["done", "pending", "pending"]
    assert [j.lease_owner for j in jobs[1:]] == [None, None]  # others may take them at once
    assert status(engine, instances[0]) == "completed"
    monkeypatch.undo()
    assert engine.run_due_jobs(datetime.now(UTC) + timedelta(days=2)) == 2


def test_a_failure_backs_off_ten_seconds_then_doubling(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    inst = tick(engine, datetime.now(UTC) + timedelta(days=1))

    def broken(*_args: object) -> None:
        raise TimeoutError("the relay did not answer")

    monkeypatch.setattr(engine, "_fire", broken)
    now = later(2)
    outcome = engine.run_job(engine.claim_due_jobs(now, 1, "w")[0], now, "w")
    assert outcome.startswith("failed (attempt 1") and "relay" in outcome
    assert _job(engine, inst).lease_until == now + BACKOFF_BASE
    now = now + BACKOFF_BASE + timedelta(seconds=1)
    engine.run_job(engine.claim_due_jobs(now, 1, "w")[0], now, "w")
    assert _job(engine, inst).lease_until == now + 2 * BACKOFF_BASE


def test_a_job_of_an_instance_that_has_ended_is_dropped_not_retried_for_ever(engine: Engine) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    inst = tick(engine, datetime.now(UTC) + timedelta(days=1))
    with engine.db.write() as s:  # ended by other means while its timer job was still pending
        s.execute(update(Instance).where(Instance.id == inst).values(status="terminated"))
    now = later(2)
    assert engine.run_job(engine.claim_due_jobs(now, 1, "w")[0], now, "w") == "parked"
    assert _job(engine, inst).state == "cancelled"
    assert engine.run_due_jobs(later(3)) == 0


def test_an_unknown_job_kind_fails_like_any_job_and_a_registered_one_runs(engine: Engine) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    inst = tick(engine, datetime.now(UTC) + timedelta(days=1))
    with engine.db.write() as s:
        s.add(Job(instance_id=inst, kind="census", due_at=datetime.now(UTC) - timedelta(seconds=1)))
    now = datetime.now(UTC)
    (lease,) = engine.claim_due_jobs(now, 5, "w")
    assert "unknown job kind 'census'" in engine.run_job(lease, now, "w")
    ran: list[int] = []
    engine.register_job_kind("census", lambda lease, _now, _owner: ran.append(lease.id))
    later_now = now + timedelta(minutes=1)
    (lease,) = engine.claim_due_jobs(later_now, 5, "w")
    assert engine.run_job(lease, later_now, "w") == "done" and ran == [lease.id]
    with pytest.raises(ValueError, match="built-in"):
        engine.register_job_kind("timer", lambda *_: None)


def test_the_serve_thread_keeps_going_after_a_failure_and_stops_when_asked(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.deploy(files("tick.bpmn"), "designer")
    claim = engine.claim_due_jobs
    calls = []

    def flaky(*args: object, **kwargs: object) -> list[Lease]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away for a moment")
        return claim(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "claim_due_jobs", flaky)
    ticker = DueJobTicker(engine, interval=0.05, settings={})
    ticker.start()
    try:
        inst = tick(engine, datetime.now(UTC) + timedelta(seconds=1))
        assert wait_until(lambda: status(engine, inst) == "completed", 60)
    finally:
        ticker.stop()
    assert not ticker.alive and len(calls) >= 2


def test_worker_command_stops_cleanly_on_sigterm_and_gives_back_what_it_claimed(
    engine: Engine, tmp_path: Path
) -> None:
    """A real ``qizhi worker`` process: SIGTERM while it waits to claim; exit 0, no lease left behind."""
    if engine.db.postgres:
        pytest.skip("the PostgreSQL processes are in tests/test_worker_pg.py")
    engine.deploy(files("tick.bpmn"), "designer")
    inst = tick(engine, datetime.now(UTC) + timedelta(days=1))
    with engine.db.write() as s:
        s.execute(
            update(Job).where(Job.instance_id == inst).values(due_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    env = {**os.environ, "QIZHI_DATABASE_URL": engine.db.url, "QIZHI_SECRET_KEY": "test"}
    log = tmp_path / "worker.log"
    with engine.db.engine.connect() as holder, log.open("w") as out:
        holder.execution_options(qizhi_write=True).execute(text("SELECT 1"))  # takes SQLite's write lock
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker", "--name", "term"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
        assert wait_until(lambda: "stop with Ctrl+C" in log.read_text(), 60), log.read_text()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        holder.rollback()  # the worker's claim, waiting on the lock, goes ahead
    assert proc.wait(30) == 0, log.read_text()
    output = log.read_text()
    assert "SIGTERM, finishing jobs in hand" in output and "stopped" in output
    job = _job(engine, inst)
    assert job.state == "pending" and job.lease_owner is None  # given back, not left to expire
