"""``qizhi worker`` processes sharing one PostgreSQL: every job exactly once, even when one is killed.

Workers here are real OS processes running the real command, so SKIP LOCKED, leases, LISTEN/NOTIFY
and a death mid-transaction are exercised as in production. Needs QIZHI_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from engine import Engine
from engine.models import AuditEvent, Incident, Instance, Job
from engine.runtime import MAX_JOB_ATTEMPTS
from engine.worker import Worker
from tests.helpers import assert_chain_intact, files
from tests.probe_worker import KIND as PROBE
from tests.probe_worker import TABLE

ROOT = Path(__file__).resolve().parent.parent
QIZHI = [sys.executable, "-m", "web.cli"]


def deploy_tick(engine: Engine) -> None:
    engine.deploy(files("tick.bpmn"), "designer")


def start_tick(engine: Engine) -> int:
    """An instance waiting on its timer, due a second ago as far as the job table is concerned.

    (A timer already due when the instance starts would fire inside the start itself.)
    """
    due = datetime.now(UTC) + timedelta(days=1)
    inst = engine.start("tick", "sec1", "B1", {"due": due.isoformat(), "fired": 0}).id
    with engine.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE job SET due_at = :due WHERE instance_id = :id"), {"id": inst, "due": PAST()}
        )
    return inst


def PAST() -> datetime:  # noqa: N802 (reads as a constant)
    return datetime.now(UTC) - timedelta(seconds=1)


def clone_waiting(engine: Engine, instance_id: int, copies: int, due: datetime) -> None:
    """``copies`` more instances in the same waiting state, each with its timer job, due at ``due``.

    Starting 10,000 instances through the engine would take minutes on a shared machine; a copy
    of the row is the same state the engine would have written, and the worker cannot tell.
    """
    with engine.db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO instance (definition_id, process_key, status, org_id, stage, title,"
                " started_by_id, revision, state, data, started_at, updated_at)"
                " SELECT definition_id, process_key, status, org_id, stage, title, started_by_id, revision,"
                " state, data, started_at, updated_at FROM instance, generate_series(1, :n) WHERE id = :id"
            ),
            {"n": copies, "id": instance_id},
        )
        conn.execute(
            text(
                "INSERT INTO job (instance_id, kind, task_guid, due_at, state, attempts, created_at)"
                " SELECT i.id, 'timer', j.task_guid, :due, 'pending', 0, now()"
                " FROM instance i JOIN job j ON j.instance_id = :id WHERE i.id <> :id"
            ),
            {"id": instance_id, "due": due},
        )
        conn.execute(
            text("UPDATE job SET due_at = :due WHERE instance_id = :id"), {"id": instance_id, "due": due}
        )


class Proc:
    """A worker process whose output goes to a file (a pipe nobody reads would stall its logging)."""

    def __init__(self, command: list[str], url: str, log: Path) -> None:
        env = {**os.environ, "QIZHI_DATABASE_URL": url, "QIZHI_SECRET_KEY": "test", "PYTHONUNBUFFERED": "1"}
        self.log = log
        with log.open("w") as out:
            self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> str:
        """SIGTERM, then the whole output; a clean stop exits 0."""
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(60)
        assert self.popen.returncode == 0, self.output()[-3000:]
        return self.output()


@pytest.fixture
def workers(pg_engine: Engine, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``workers(name, *args)`` starts ``qizhi worker`` (``probe=True``: tests.probe_worker) processes.

    Any still running at the end are stopped, killed if they hang.
    """
    started: list[Proc] = []

    def start(name: str, *args: str, probe: bool = False) -> Proc:
        url = pg_engine.db.url
        if probe:
            command = [sys.executable, "-m", "tests.probe_worker", url, name, *args]
        else:
            command = [*QIZHI, "worker", "--name", name, *args]
        proc = Proc(command, url, tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.popen.wait(30)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def pending(engine: Engine) -> int:
    with engine.db.read() as s:
        return s.execute(select(func.count()).select_from(Job).where(Job.state == "pending")).scalar_one()


@pytest.fixture
def probe_table(pg_engine: Engine) -> Iterator[None]:
    with pg_engine.db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS probe_run"))
        conn.execute(text(TABLE))
    yield
    with pg_engine.db.engine.begin() as conn:
        conn.execute(text("DROP TABLE probe_run"))


TIMERS, PROBES = 100, 9_900


def test_ten_thousand_due_jobs_run_exactly_once_across_worker_processes(  # type: ignore[no-untyped-def]
    pg_engine: Engine, workers, probe_table
) -> None:
    engine = pg_engine
    deploy_tick(engine)
    first = start_tick(engine)
    clone_waiting(engine, first, TIMERS - 1, PAST())  # real timers through the unit of work
    with engine.db.engine.begin() as conn:  # and cheap probes, due in the same instant, on the first instance
        conn.execute(
            text(
                "INSERT INTO job (instance_id, kind, due_at, state, attempts, created_at)"
                " SELECT :id, :kind, :due, 'pending', 0, now() FROM generate_series(1, :n)"
            ),
            {"id": first, "kind": PROBE, "due": PAST(), "n": PROBES},
        )
    assert pending(engine) == TIMERS + PROBES == 10_000

    procs = [workers(f"w{i}", "2", probe=True) for i in range(3)]
    wait_for(lambda: pending(engine) == 0, 600, "every job to run")  # ~1 min on 2 quiet cores
    outputs = [p.stop() for p in procs]

    with engine.db.read() as s:
        fired = s.execute(
            select(AuditEvent.instance_id, func.count())
            .where(AuditEvent.action == "timer.fired")
            .group_by(AuditEvent.instance_id)
        ).all()
        probes = s.execute(text("SELECT job_id, count(*) FROM probe_run GROUP BY job_id")).all()
        states = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        statuses = dict(s.execute(select(Instance.status, func.count()).group_by(Instance.status)).all())
        owners = set(s.execute(select(Job.lease_owner).distinct()).scalars())
        data = s.execute(select(Instance.data)).scalars().all()
    assert len(probes) == PROBES and {n for _, n in probes} == {1}  # each probe ran once, none twice
    assert len(fired) == TIMERS and {n for _, n in fired} == {1}  # each timer fired once
    assert {d["fired"] for d in data} == {1}  # the process's own count: no step ran twice
    assert states == {"done": 10_000} and statuses == {"completed": TIMERS}
    assert {o.split("/")[0] for o in owners} == {"w0", "w1", "w2"}  # all three shared the work
    assert sum(out.count(" instance ") for out in outputs) == 10_000  # one log line per job
    assert_chain_intact(engine)


def test_a_killed_workers_job_runs_once_after_its_lease_runs_out(pg_engine: Engine, workers) -> None:  # type: ignore[no-untyped-def]
    engine = pg_engine
    deploy_tick(engine)
    inst = start_tick(engine)
    with engine.db.engine.connect() as blocker:
        # Hold the instance's row lock: the worker claims the job, enters the unit of work and waits
        # there, mid-job, with its transaction open, until it is killed.
        blocker.execute(text("SELECT id FROM instance WHERE id = :id FOR UPDATE"), {"id": inst})
        doomed = workers("doomed", "--lease", "3", "--poll-max", "1")

        def doomed_waits_on_the_lock() -> bool:
            with engine.db.read() as s:
                owner = s.execute(select(Job.lease_owner).where(Job.instance_id == inst)).scalar()
                waiting = s.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
            return owner == "doomed" and waiting >= 1

        wait_for(doomed_waits_on_the_lock, 60, "the worker to be stuck mid-job")
        doomed.popen.kill()
        doomed.popen.wait(10)
        blocker.rollback()
    survivor = workers("survivor", "--lease", "3", "--poll-max", "1")
    wait_for(lambda: pending(engine) == 0, 60, "the job to be picked up again")
    survivor.stop()

    with engine.db.read() as s:
        job = s.execute(select(Job).where(Job.instance_id == inst)).scalar_one()
        fired = s.execute(
            select(func.count()).where(AuditEvent.action == "timer.fired", AuditEvent.instance_id == inst)
        ).scalar_one()
        instance = s.get(Instance, inst)
    assert (job.state, job.lease_owner, job.attempts) == ("done", "survivor", 1)
    assert fired == 1 and instance.status == "completed" and instance.data["fired"] == 1
    assert_chain_intact(engine)


def test_an_always_failing_job_is_one_incident_and_a_retry_after_the_fix_resumes(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pg_engine
    deploy_tick(engine)
    broken, healthy = start_tick(engine), start_tick(engine)
    clock = [datetime.now(UTC)]
    engine.clock = lambda: clock[0]
    real_fire = engine._fire

    def fire(lease, at, owner):  # type: ignore[no-untyped-def]
        if lease.instance_id == broken:
            raise ConnectionError("the directory service is down")
        return real_fire(lease, at, owner)

    monkeypatch.setattr(engine, "_fire", fire)
    worker = Worker(engine, "w", concurrency=2)
    for _ in range(MAX_JOB_ATTEMPTS):
        worker.run_once("w/0")
        with engine.db.read() as s:
            job = s.execute(select(Job).where(Job.instance_id == broken)).scalar_one()
        if job.state == "pending":
            assert worker.run_once("w/1") == 0  # backing off: nobody may take it yet
            clock[0] = job.lease_until + timedelta(seconds=1)
    assert engine.instance(healthy).status == "completed"  # the failing job held up nobody else
    with engine.db.read() as s:
        (incident,) = s.execute(select(Incident)).scalars()
        job = s.execute(select(Job).where(Job.instance_id == broken)).scalar_one()
    assert (incident.kind, incident.state, job.state, job.attempts) == (
        "job",
        "open",
        "failed",
        MAX_JOB_ATTEMPTS,
    )
    assert "directory service" in incident.message
    assert worker.run_once() == 0

    monkeypatch.undo()  # the fix
    engine.retry_incident(incident.id, "office")  # its unit of work puts the job back on the timer's day
    clock[0] += timedelta(days=2)
    assert worker.run_once() == 1
    view = engine.instance(broken)
    assert view.status == "completed" and view.data["fired"] == 1 and view.incidents == []
    assert_chain_intact(engine)
