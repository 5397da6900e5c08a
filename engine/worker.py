"""The job worker: claims due jobs with a lease and runs each through the engine, many at once.

Any number of workers on any number of hosts share one PostgreSQL: ``claim_due_jobs`` leases jobs
with ``SELECT … FOR UPDATE SKIP LOCKED``, so two workers never hold the same job, and every job
re-checks its lease under its own lock before it changes anything. On SQLite (one process) the
worker runs as a thread of ``qizhi serve``.

A worker never polls every waiting instance. Each lane reads the next due time off the job
index, sleeps until then (at most ``poll_max``) and is woken sooner when a transaction writes a job
due earlier (engine.wakeup: LISTEN/NOTIFY on PostgreSQL, an in-process signal on SQLite).

Stopping (SIGTERM/SIGINT in ``qizhi worker``) lets each lane finish the job in hand and gives the
leases of jobs it had not started back at once; a worker that dies instead (SIGKILL, power loss)
leaves leases that simply run out, and its uncommitted job rolled back with its connection.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from engine.models import Job
from engine.runtime import LEASE, Engine, Lease
from engine.wakeup import PostgresListener

log = logging.getLogger("qizhi.worker")
BATCH = 10  # jobs a lane claims at once: enough to amortise the claim, few enough to share
IDLE = 0.05  # seconds to pause when a due job was seen but another worker got it first
PEEK = 64  # rows read off the due index to find when the next job can be claimed


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """``concurrency`` lanes (threads) claiming and running jobs until :meth:`stop` is called."""

    def __init__(
        self,
        engine: Engine,
        name: str | None = None,
        *,
        concurrency: int = 1,
        poll_max: float = 5.0,
        lease: timedelta = LEASE,
        batch: int = BATCH,
        logger: logging.Logger | None = None,
    ) -> None:
        if concurrency < 1 or poll_max <= 0 or batch < 1 or lease <= timedelta(0):
            raise ValueError("concurrency and batch must be at least 1, poll_max and lease positive")
        self.engine = engine
        self.name = (name or default_name())[:90]
        self.concurrency = concurrency
        self.poll_max = poll_max
        self.lease = lease
        self.batch = batch
        self.logger = logger or log
        self.signal = engine.job_signal
        self._stop = threading.Event()
        self._lanes: list[threading.Thread] = []
        self._listener: PostgresListener | None = None

    # --- life ------------------------------------------------------------------------------------

    def owner(self, lane: int) -> str:
        """The lease owner a lane writes: unique per lane, so a lane only ever runs its own leases."""
        return self.name if self.concurrency == 1 else f"{self.name}/{lane}"

    def start(self) -> None:
        if self.engine.db.postgres:
            self._listener = PostgresListener(self.engine.db, self.signal, self._stop, self.logger)
            self._listener.start()
        for lane in range(self.concurrency):
            thread = threading.Thread(
                target=self._lane, args=(lane,), name=f"qizhi-worker-{lane}", daemon=True
            )
            self._lanes.append(thread)
            thread.start()

    def stop(self) -> None:
        """Ask every lane to finish its job in hand and give back the rest; returns at once."""
        self._stop.set()
        self.signal.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the lanes to end; True when all have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._lanes:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not self.alive

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._lanes)

    def run(self) -> None:
        """Start and block until stopped (the ``qizhi worker`` command's main thread)."""
        self.start()
        while self.alive:
            self.join(0.5)  # short joins keep the main thread free to take signals

    # --- one lane --------------------------------------------------------------------------------

    def _lane(self, lane: int) -> None:
        owner = self.owner(lane)
        while not self._stop.is_set():
            seen = self.signal.version
            try:
                ran = self.run_once(owner)
                if ran >= self.batch:
                    continue  # more may be due right now
                deadline = self._deadline()
            except Exception:  # a database hiccup must not end the lane; try again after a pause
                self.logger.exception("worker %s: claiming jobs failed; trying again", owner)
                deadline = _now() + timedelta(seconds=self.poll_max)
            self.signal.wait(deadline, seen, self._stop)

    def run_once(self, owner: str | None = None) -> int:
        """Claim up to ``batch`` due jobs and run them; return how many were claimed."""
        owner = owner or self.owner(0)
        leases = self.engine.claim_due_jobs(self.engine.clock(), self.batch, owner, self.lease)
        for index, lease in enumerate(leases):
            if self._stop.is_set():
                rest = leases[index:]
                self.engine.release_leases([job.id for job in rest], owner)
                self.logger.info("worker %s: stopping, gave back %d unstarted job(s)", owner, len(rest))
                break
            self._run(lease, owner)
        return len(leases)

    def _run(self, lease: Lease, owner: str) -> None:
        started = time.perf_counter()
        outcome = self.engine.run_job(lease, self.engine.clock(), owner)
        took = (time.perf_counter() - started) * 1000
        level = logging.INFO if outcome in ("done", "released", "parked") else logging.WARNING
        self.logger.log(
            level,
            "job %d %s instance %d: %s (%.0f ms, %s)",
            lease.id,
            lease.kind,
            lease.instance_id,
            outcome,
            took,
            owner,
        )

    def _deadline(self) -> datetime:
        """When to look again: the next job due (or lease running out), at most ``poll_max`` away."""
        now = _now()
        latest = now + timedelta(seconds=self.poll_max)
        upcoming = next_due(self.engine, now)
        if upcoming is None:
            return latest
        if upcoming <= now:  # due, but another worker holds it or is claiming it right now
            return now + timedelta(seconds=IDLE)
        return min(upcoming, latest)


def next_due(engine: Engine, now: datetime) -> datetime | None:
    """The earliest moment a pending job can be claimed, read off the (state, due_at) index.

    Leased jobs and jobs backing off are due already, so they sort first; a few dozen rows show
    both when their leases run out and when the first unleased job falls due.
    """
    with engine.db.read() as s:
        rows = s.execute(
            select(Job.due_at, Job.lease_until)
            .where(Job.state == "pending")
            .order_by(Job.due_at, Job.id)
            .limit(PEEK)
        ).all()
        if not rows:
            return None
        times = [max(due, until) if until is not None and until > now else due for due, until in rows]
        if all(until is not None and until > now for _, until in rows):
            unleased = s.execute(
                select(Job.due_at)
                .where(Job.state == "pending", Job.lease_until.is_(None))
                .order_by(Job.due_at)
                .limit(1)
            ).scalar()
            if unleased is not None:
                times.append(unleased)
        return min(times)


def _now() -> datetime:
    return datetime.now(UTC)
