"""Several OS processes append to one chain at once on PostgreSQL: one chain, no gaps, no forks.

Each process has its own ``Database`` (its own connections), as gunicorn workers and ``qizhi
worker`` processes on several hosts would. A further process records checkpoints while they write.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from sqlalchemy import func, select

from engine import Database
from engine import audit as engine_audit
from engine.models import AuditCheckpoint, AuditEvent

WRITERS = 4
EVENTS_EACH = 250
CHECKPOINTS = 8


def write(url: str, writer: int, barrier: Any) -> None:
    """Append EVENTS_EACH events in transactions of one to three events, numbered in order."""
    db = Database(url)
    barrier.wait()
    n = 0
    while n < EVENTS_EACH:
        size = min(1 + (n % 3), EVENTS_EACH - n)
        with db.write() as s:
            engine_audit.append(
                s,
                [
                    engine_audit.PendingEvent(
                        f"writer{writer}", "test.appended", {"writer": writer, "n": n + i}
                    )
                    for i in range(size)
                ],
            )
        n += size
    db.dispose()


def checkpoint(url: str, barrier: Any) -> None:
    db = Database(url)
    barrier.wait()
    for _ in range(CHECKPOINTS):
        with db.write() as s:
            engine_audit.checkpoint(s, "checkpointer")
    db.dispose()


def test_processes_appending_at_once_keep_one_valid_chain(pg_db: Database) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WRITERS + 1)
    with pg_db.write() as s:  # something to checkpoint from the first moment
        engine_audit.append(s, [engine_audit.PendingEvent("setup", "test.appended", {"writer": -1, "n": 0})])
    processes = [ctx.Process(target=write, args=(pg_db.url, w, barrier)) for w in range(WRITERS)]
    processes.append(ctx.Process(target=checkpoint, args=(pg_db.url, barrier)))
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * (WRITERS + 1)

    with pg_db.read() as s:
        verdict = engine_audit.verify(s)
        count, low, high = s.execute(
            select(func.count(), func.min(AuditEvent.seq), func.max(AuditEvent.seq))
        ).one()
        forks = s.execute(
            select(AuditEvent.prev_hash).group_by(AuditEvent.prev_hash).having(func.count() > 1)
        ).all()
        checkpoints = s.execute(select(func.count()).select_from(AuditCheckpoint)).scalar_one()
        per_writer: dict[int, list[int]] = {}
        for payload in s.execute(
            select(AuditEvent.payload).where(AuditEvent.action == "test.appended").order_by(AuditEvent.seq)
        ).scalars():
            per_writer.setdefault(payload["writer"], []).append(payload["n"])
    assert verdict.ok, str(verdict)
    expected = 1 + WRITERS * EVENTS_EACH + CHECKPOINTS  # setup, the writers', one event per checkpoint
    assert (count, low, high) == (expected, 1, expected)  # seq 1..N: no gaps
    assert forks == []  # no two events claim the same predecessor
    assert checkpoints == CHECKPOINTS
    for writer in range(WRITERS):  # each writer's events in the order it wrote them
        assert per_writer[writer] == list(range(EVENTS_EACH))
