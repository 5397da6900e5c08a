"""How fast the audit trail is: appends per second, ``verify`` over a million events, reading and export.

Run from the repository root::

    .venv/bin/python -m bench.audit                        # SQLite temp file, 1,000,000 events
    .venv/bin/python -m bench.audit --events 100000        # smaller, about a minute
    .venv/bin/python -m bench.audit --postgres postgresql+psycopg://postgres@127.0.0.1:5432/qizhi_audit

By default everything runs on a SQLite *file* in a temporary directory, made with the engine's
migrations. **--postgres DROPS SCHEMA public CASCADE in the database it is given** and recreates
it with the migrations, then runs the same figures there as well (``..._postgres``). Never point
it at a database whose data you want to keep.

Output is one ``name=value`` line per figure and ``# ...`` context lines. Nothing is asserted.

The trail is generated the fast way: events computed in Python with the real ``compute_hash``
(so ``verify`` checks a genuine chain) and bulk-inserted (executemany on SQLite, COPY on
PostgreSQL), spread evenly over the last 365 days. Their shapes are realistic: 1,000 actors,
100 organisations (one of them *sparse*, with 1 event in 10,000), two processes (one sparse),
50,000 instances, completions carrying form data and a before/after diff.

Figures
-------
``generate_s``           context: time to compute and insert the chain.
``verify_s``             ``engine.audit.verify`` over the whole chain, keyset pages of 5,000.
``verify_cpu_s``         the CPU seconds the verifying process itself used (wall time on a shared machine
                         is mostly waiting; the database's own work is not included).
``verify_events_per_s``  the same as a rate.
``checkpoint_s``         ``engine.audit.checkpoint`` soon after another (walks only what followed it).
``monitor_first_ms`` / ``monitor_next_ms``  the /audit status box: first view (last 20,000 events or since
                         the checkpoint), then a view after 10 new events.
``page_<name>_ms``       median of 5 ``engine.audit_query.page`` calls (50 rows), fresh session each:
                         newest, deep (older than the middle seq), actor, action, instance, org (dense),
                         org_sparse, process, process_sparse, time (one day in the middle of the year).
``timeline_ms``          one instance's timeline (``ix_audit_instance``).
``export_csv_events_per_s`` / ``export_rss_growth_mb``  a streamed CSV export of 200,000 events
                         (``engine.audit_export.stream``), and how much the process's peak RSS grew.
``append_per_s_1_writer``   transactions of one event each, ``audit.append`` in ``Database.write()``.
``append_per_s_4_writers``  four OS processes doing the same at once (PostgreSQL; on SQLite they
                            queue on the database lock, printed for comparison).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert, select, text, update

from engine import Database
from engine import audit as engine_audit
from engine.audit_export import stream
from engine.audit_query import AuditFilter, ChainMonitor, Scope, conditions, page, timeline
from engine.models import AuditEvent, AuditHead, Definition, Organisation, User

SEED = 20250701
ORGS, USERS, INSTANCES = 100, 1000, 50_000
SPARSE_ORG = ORGS  # org id with 1 in 10,000 events
SPARSE_EVERY = 10_000
INSERT_BATCH = 10_000
APPENDS = 1000  # transactions per writer
EXPORT_EVENTS = 200_000
SPAN = timedelta(days=365)
ACTIONS = (
    ("task.completed", 25),
    ("task.created", 25),
    ("engine.steps", 20),
    ("task.claimed", 10),
    ("timer.scheduled", 8),
    ("instance.started", 5),
    ("timer.fired", 4),
    ("signed_in", 3),
)
COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "instance_id",
    "task_guid",
    "definition_id",
    "org_id",
    "payload",
    "prev_hash",
    "hash",
)


def figure(name: str, value: float, unit: str = "") -> None:
    print(f"{name}={value:.4g}{unit}", flush=True)


def note(text_: str) -> None:
    print(f"# {text_}", flush=True)


# --- the database --------------------------------------------------------------------------------


def fresh(url: str) -> Database:
    db = Database(url)
    if db.postgres:
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    db.upgrade()
    with db.write() as s:
        s.execute(insert(Organisation), [{"id": 1, "code": "HQ", "name": "公司党委", "kind": "committee"}])
        s.execute(
            insert(Organisation),
            [
                {"id": i, "code": f"B{i}", "name": f"第{i}党支部", "kind": "branch", "parent_id": 1}
                for i in range(2, ORGS + 1)
            ],
        )
        s.execute(
            insert(User),
            [{"id": i, "username": f"user{i}", "display_name": f"用户{i}"} for i in range(1, USERS + 1)],
        )
        definition = {"name": "流程", "version": 1, "sources": {}, "deployed_by": "user1"}
        s.execute(
            insert(Definition),
            [
                definition | {"id": 1, "process_key": "project_lifecycle", "content_hash": "a" * 64},
                definition | {"id": 2, "process_key": "rare_process", "content_hash": "b" * 64},
            ],
        )
    if db.postgres:  # ids were given explicitly: move the sequences past them
        with db.engine.begin() as conn:
            for table in ("organisation", "app_user", "definition"):
                serial = f"pg_get_serial_sequence('{table}', 'id')"
                conn.execute(text(f"SELECT setval({serial}, (SELECT MAX(id) FROM {table}))"))
    return db


def events(n: int, start: datetime) -> Iterator[list[dict[str, Any]]]:
    """The chain in batches of INSERT_BATCH rows, hashed exactly as ``audit.append`` hashes them."""
    rng = random.Random(SEED)
    names = [a for a, _ in ACTIONS]
    weights = [w for _, w in ACTIONS]
    step = SPAN / n
    prev = engine_audit.GENESIS
    batch: list[dict[str, Any]] = []
    for seq in range(1, n + 1):
        action = rng.choices(names, weights)[0]
        sparse = seq % SPARSE_EVERY == 0
        org = SPARSE_ORG if sparse else rng.randint(2, ORGS - 1)
        instance = None if action == "signed_in" else rng.randint(1, INSTANCES)
        payload: dict[str, Any]
        if action == "task.completed":
            score = rng.randint(60, 100)
            payload = {
                "task": seq, "title": "评审打分", "form": "review.json",
                "data": {"score": score, "comment": "同意立项，请按计划推进。"},
                "diff": {"added": {"score": score}, "removed": [], "changed": {"stage": ["评审", "实施"]}},
            }  # fmt: skip
        elif action == "signed_in":
            payload = {"address": "10.0.0.1", "agent": "Mozilla/5.0"}
        else:
            payload = {"task": seq, "title": "填写申报书"}
        row = SimpleNamespace(
            seq=seq,
            at=start + step * seq,
            actor=f"user{rng.randint(1, USERS)}",
            action=action,
            instance_id=instance,
            task_guid=str(uuid.UUID(int=rng.getrandbits(128))) if instance else None,
            definition_id=None if instance is None else (2 if sparse else 1),
            org_id=None if action == "signed_in" else org,
            payload=payload,
            prev_hash=prev,
        )
        row.hash = prev = engine_audit.compute_hash(row)
        batch.append(vars(row))
        if len(batch) == INSERT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def generate(db: Database, n: int) -> None:
    start = datetime.now(UTC) - SPAN
    last: dict[str, Any] = {}
    began = time.perf_counter()
    if db.postgres:
        raw = db.engine.raw_connection()
        try:
            with raw.cursor() as cur, cur.copy(f"COPY audit_event ({', '.join(COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for batch in events(n, start):
                    for r in batch:
                        copy.write_row(
                            [
                                json.dumps(r["payload"], ensure_ascii=False) if c == "payload" else r[c]
                                for c in COLUMNS
                            ]
                        )
                    last = batch[-1]
            raw.commit()
        finally:
            raw.close()
    else:
        for batch in events(n, start):
            with db.write() as s:
                s.execute(insert(AuditEvent.__table__), batch)
            last = batch[-1]
    with db.write() as s:
        s.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=last["seq"], hash=last["hash"]))
    if db.postgres:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE audit_event"))
    figure("generate_s", time.perf_counter() - began, "")
    note(f"{n} events over {SPAN.days} days; {db.engine.url.get_backend_name()}")


# --- figures -------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def median_ms(db: Database, fn: Callable[[Any], Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        with db.read() as s:
            began = time.perf_counter()
            fn(s)
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def verify_figures(db: Database, suffix: str) -> None:
    with db.read() as s:
        cpu = time.process_time()
        seconds, verdict = timed(lambda: engine_audit.verify(s))
        cpu = time.process_time() - cpu
    note(str(verdict))
    figure(f"verify_s{suffix}", seconds)
    figure(f"verify_cpu_s{suffix}", cpu)  # this process's own CPU: comparable on a busy machine
    figure(f"verify_events_per_s{suffix}", verdict.checked / seconds)
    with db.write() as s:
        engine_audit.checkpoint(s, "bench")  # verifies from the first event: already timed above
    append_some(db, 10)
    with db.write() as s:
        seconds, _ = timed(lambda: engine_audit.checkpoint(s, "bench"))
    figure(f"checkpoint_s{suffix}", seconds)
    monitor = ChainMonitor()
    append_some(db, 20_000 // 2)  # so the first view has a stretch since the checkpoint to walk
    with db.read() as s:
        first, status = timed(lambda: monitor.status(s))
    note(f"status box: {status.verdict} (basis {status.basis} {status.basis_seq})")
    append_some(db, 10)
    with db.read() as s:
        nxt, _ = timed(lambda: monitor.status(s))
    figure(f"monitor_first_ms{suffix}", first * 1000)
    figure(f"monitor_next_ms{suffix}", nxt * 1000)


def append_some(db: Database, n: int) -> None:
    with db.write() as s:
        engine_audit.append(
            s, [engine_audit.PendingEvent("user1", "bench.filler", {"i": i}) for i in range(n)]
        )


def page_figures(db: Database, suffix: str) -> None:
    with db.read() as s:
        top = engine_audit.head(s).seq
        middle = s.execute(
            select(AuditEvent.at, AuditEvent.actor, AuditEvent.instance_id)
            .where(AuditEvent.seq <= top // 2, AuditEvent.instance_id.is_not(None))
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        ).one()
    middle_at, actor, instance = middle
    everyone = Scope(None)
    queries: dict[str, tuple[AuditFilter, int | None]] = {
        "newest": (AuditFilter(), None),
        "deep": (AuditFilter(), top // 2),
        "actor": (AuditFilter(actor=actor), None),
        "action": (AuditFilter(action="timer.fired"), None),
        "instance": (AuditFilter(instance_id=instance), None),
        "org": (AuditFilter(org_id=42), None),
        "org_sparse": (AuditFilter(org_id=SPARSE_ORG), None),
        "process": (AuditFilter(process="project_lifecycle"), None),
        "process_sparse": (AuditFilter(process="rare_process"), None),
        "time": (AuditFilter(since=middle_at, until=middle_at + timedelta(days=1)), None),
        "actor_and_time": (
            AuditFilter(actor=actor, since=middle_at - timedelta(days=30), until=middle_at),
            None,
        ),
    }
    for name, (f, before) in queries.items():
        rows = 0

        def run(s: Any, f: AuditFilter = f, before: int | None = before) -> None:
            nonlocal rows
            rows = len(page(s, f, everyone, before=before).events)

        figure(f"page_{name}_ms{suffix}", median_ms(db, run))
        note(f"page_{name}: {rows} rows; plan: {plan(db, f, before)}")
    figure(f"timeline_ms{suffix}", median_ms(db, lambda s: timeline(s, instance, everyone)))


def plan(db: Database, f: AuditFilter, before: int | None) -> str:
    """How the database answers the page's main query (EXPLAIN), so a missing index shows."""
    with db.read() as s:
        query = select(AuditEvent.__table__).where(*conditions(s, f, Scope(None)))
        if before is not None:
            query = query.where(AuditEvent.seq < before)
        query = query.order_by(AuditEvent.seq.desc()).limit(50)
        compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN" if db.postgres else "EXPLAIN QUERY PLAN"
        rows = s.execute(text(f"{prefix} {compiled}")).all()
    return " | ".join(str(r[0] if db.postgres else r[-1]).strip() for r in rows)


def export_figures(db: Database, suffix: str) -> None:
    with db.read() as s:
        top = engine_audit.head(s).seq
        low_at = s.execute(
            select(AuditEvent.at).where(AuditEvent.seq == max(1, top - EXPORT_EVENTS))
        ).scalar()
    f = AuditFilter(since=low_at)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = 0

    def progress(n: int) -> None:
        nonlocal count
        count += n

    began = time.perf_counter()
    size = sum(len(chunk) for chunk in stream(db, "csv", f, Scope(None), top, progress=progress))
    seconds = time.perf_counter() - began
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    figure(f"export_csv_events_per_s{suffix}", count / seconds)
    figure(f"export_rss_growth_mb{suffix}", grown)
    note(f"exported {count} events, {size / 1e6:.1f} M characters of CSV in {seconds:.1f} s")


def _writer(url: str, n: int, barrier: Any) -> None:
    db = Database(url)
    barrier.wait()
    for i in range(n):
        with db.write() as s:
            event = engine_audit.PendingEvent("user1", "bench.appended", {"i": i, "data": {"score": 90}})
            engine_audit.append(s, [event])
    db.dispose()


def append_figures(db: Database, suffix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    for writers in (1, 4):
        barrier = ctx.Barrier(writers + 1)
        procs = [ctx.Process(target=_writer, args=(db.url, APPENDS, barrier)) for _ in range(writers)]
        for p in procs:
            p.start()
        barrier.wait()
        began = time.perf_counter()
        for p in procs:
            p.join()
        wall = time.perf_counter() - began
        label = "1_writer" if writers == 1 else f"{writers}_writers"
        figure(f"append_per_s_{label}{suffix}", writers * APPENDS / wall)
    with db.read() as s:
        note(f"after the appends: {engine_audit.verify(s)}")


def run(url: str, n: int, suffix: str) -> None:
    db = fresh(url)
    try:
        generate(db, n)
        verify_figures(db, suffix)
        page_figures(db, suffix)
        export_figures(db, suffix)
        append_figures(db, suffix)
    finally:
        db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="size of the generated trail")
    parser.add_argument(
        "--postgres", metavar="URL", help="also run on this PostgreSQL database (DROPS SCHEMA public CASCADE)"
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="only the PostgreSQL run")
    args = parser.parse_args(argv)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="qizhi-audit-bench-") as folder:
            run(f"sqlite:///{Path(folder) / 'audit.db'}", args.events, "")
    if args.postgres:
        run(args.postgres, args.events, "_postgres")
    return 0


if __name__ == "__main__":
    sys.exit(main())
