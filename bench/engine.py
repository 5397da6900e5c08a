"""How fast the engine is, and what its durability costs over SpiffWorkflow alone.

Run from the repository root::

    .venv/bin/python -m bench.engine              # full run, a few minutes on 2 cores
    .venv/bin/python -m bench.engine --quick      # everything shrunk, under a minute
    .venv/bin/python -m bench.engine --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.engine --profile    # adds a cProfile of engine completions

**--postgres DROPS SCHEMA public CASCADE in the database it is given** (twice: once for the
throughput run, once for the inbox tables) and recreates it with the engine's migrations. Never
point it at a database whose data you want to keep.

Output is one ``name=value`` line per figure and ``# ...`` context lines (query plans, sizes,
profiles). Nothing here is asserted: the figures are for people to read and compare over time;
the targets below are what we aim for, not what a test enforces.

The looping process is ``tests/fixtures/loop.bpmn`` (+ ``report.json``): one user task in a loop
with a script task and an exclusive gateway, started with ``{"reports": 0}`` and completed with
``{"progress": "...", "done": False}`` so it never leaves the loop. Unless a figure says ``_postgres``,
the engine runs on a SQLite *file* database in a temporary directory (WAL, audit on), built with
``Database(url).upgrade()`` and a directory made with ``engine.directory``.

Figures
-------
``engine_completion_ms``
    Median wall time of one ``Engine.complete`` in one loop instance, over N completions (300;
    50 with --quick): load and revision check, form validation, the task, engine steps, history
    compaction, inbox/timer projection, hash-chained audit, serialization and commit.
``raw_completion_ms``
    Median time of the same step in plain SpiffWorkflow, in memory: find the ready user task,
    update its data, ``run()``, ``do_engine_steps()``, ``BpmnWorkflowSerializer.serialize_json``
    (``SpiffWorkflow.spiff.serializer.DEFAULT_CONFIG``, spec parsed by
    ``SpiffBpmnParser(validator=VALIDATOR)``), with the engine's own sandboxed script engine
    (``engine.sandbox.make_script_engine``), so the ratio isolates persistence, projection and
    audit. SpiffWorkflow alone keeps every completed task (3 per round) while the engine cuts old
    history (engine/history.py, ~26 tasks), so the raw side starts a fresh workflow (untimed)
    every 10 completions to keep its tree the same size; see ``raw_growing_completion_ms``.
``raw_unsandboxed_completion_ms``
    The same with SpiffWorkflow's default ``PythonScriptEngine``: what the sandbox itself costs.
``overhead_ratio``
    ``engine_completion_ms / raw_completion_ms``. Target <= 2. The engine and raw loops take
    turns, one completion each, so machine noise falls on both alike.
``raw_growing_completion_ms``
    Context: raw SpiffWorkflow never restarted, its tree growing for all N completions (it loses
    its ready task past ~333 rounds, when the tree is 1000 deep).
``nth_completion_ratio``
    In one loop instance, median latency of completions nth-4..nth+5 (nth = 1000; 200 with
    --quick) over the median of completions 6..15. Does a long-running instance get slower as its
    history grows? Target <= 1.5. The 6..15 window is taken from a second, fresh instance timed
    in turns with the late window (same machine state, same table sizes), and the figure is the
    median of the ten pairwise ratios, since a shared 2-core machine drifts between fast and slow
    stretches far more than 1.5x. The ratio of medians, and the one against the first instance's
    own completions 6..15 (minutes earlier), are printed as a ``#`` line.
``nth_iteration``
    The nth used above.
``state_bytes_at_10`` / ``state_bytes_at_<nth>``
    ``len(Instance.state)`` (compressed runtime state, as stored) after completion 10 and nth; the
    ``#`` lines give the uncompressed JSON size and the number of tasks in the tree.
``inbox_p50_ms`` / ``inbox_p95_ms`` (``..._postgres`` with --postgres)
    One user's inbox, ``engine.queries.inbox(session, user_id)`` in a fresh read session, timed
    for ~200 random users over a ``human_task`` table of 100,000 open tasks (10,000 with --quick)
    for 1,000 users in 100 organisations, bulk-inserted with realistic shapes: each task is either
    assigned to a member of its instance's organisation or offered to ``org:<id>:<role>`` for a
    role someone holds in that organisation or above it; each user holds roles in 1-2
    organisations. Per-membership-count p50/p95 and the query plan of each kind of user (EXPLAIN
    QUERY PLAN / EXPLAIN ANALYZE) are printed as ``#`` lines so an index problem is visible.
    SQLite is measured as the engine leaves it (no statistics), then again after ANALYZE
    (``inbox_p50_ms_analyzed`` / ``inbox_p95_ms_analyzed``); PostgreSQL after ANALYZE, as
    autovacuum would do. Target p95 <= 20 ms.
``starts_per_s`` / ``completions_per_s`` / ``completion_p95_ms`` (``..._postgres``)
    Sequential throughput on one core through the engine API: start many loop instances (200),
    then complete their tasks round-robin (5 rounds); only the ``Engine.start`` /
    ``Engine.complete`` calls are timed, not the look-up of each next task id.

``--profile`` adds, as ``#`` lines, the milliseconds per completion in each phase of the unit of
work (a few engine functions are wrapped with a clock while it runs; no file is changed) with
the SQL statements sent, then cProfile's top 25 by cumulative time and its own time by library.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import io
import json
import pstats
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.serializer import DEFAULT_CONFIG
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection

from engine import Database, Engine
from engine.directory import add_org, add_user, grant
from engine.models import Definition, HumanTask, Instance
from engine.queries import inbox
from engine.sandbox import make_script_engine

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
LOOP_FILES = ("loop.bpmn", "report.json")
ACTOR = "member1"
START_DATA = {"reports": 0}
SEED = 20240607


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does; --quick trades precision for a run under a minute."""

    overhead_completions: int
    nth: int
    inbox_tasks: int
    inbox_users: int
    inbox_orgs: int
    tasks_per_instance: int
    inbox_queries: int
    throughput_instances: int
    throughput_rounds: int


FULL = Sizes(
    overhead_completions=300, nth=1000, inbox_tasks=100_000, inbox_users=1000, inbox_orgs=100,
    tasks_per_instance=20, inbox_queries=200, throughput_instances=200, throughput_rounds=5,
)
QUICK = Sizes(
    overhead_completions=50, nth=200, inbox_tasks=10_000, inbox_users=200, inbox_orgs=20,
    tasks_per_instance=10, inbox_queries=100, throughput_instances=20, throughput_rounds=5,
)


# --- output ------------------------------------------------------------------------------------


def emit(name: str, value: float | int | str) -> None:
    """One figure per line, ``name=value``, so a script or a person can read it back."""
    if isinstance(value, float):
        value = f"{value:.3f}"
    print(f"{name}={value}", flush=True)


def note(message: str) -> None:
    """Context that is not a figure: sizes, plans, profiles."""
    for line in message.splitlines() or [""]:
        print(f"# {line}".rstrip(), flush=True)


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1000.0


def percentile_ms(seconds: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: no interpolation, so p95 of 200 samples is an observed sample."""
    ordered = sorted(seconds)
    rank = max(1, round(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1] * 1000.0


def submission(i: int) -> dict[str, Any]:
    """The form data of the i-th report; ``done`` stays False so the loop never ends."""
    return {"progress": f"第{i + 1}次进度报告", "done": False}


# --- databases -----------------------------------------------------------------------------------


@contextmanager
def sqlite_database(name: str) -> Iterator[Database]:
    """A migrated SQLite file in its own temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"qizhi-bench-{name}-") as tmp:
        db = Database(f"sqlite:///{tmp}/{name}.db")
        db.upgrade()
        try:
            yield db
        finally:
            db.dispose()


@contextmanager
def postgres_database(url: str) -> Iterator[Database]:
    """A PostgreSQL database with a freshly dropped and migrated public schema (destructive)."""
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    db.upgrade()
    try:
        yield db
    finally:
        db.dispose()


def loop_engine(db: Database) -> Engine:
    """An engine with the loop process deployed and one member to run it."""
    with db.write() as s:
        add_org(s, "HQ", "公司党委", None, "committee")
        add_org(s, "B1", "第一党支部", "HQ", "branch")
        add_user(s, "designer", "流程设计员")
        grant(s, "designer", "HQ", "designer")
        add_user(s, ACTOR, "党员甲")
        grant(s, ACTOR, "B1", "party_member")
    engine = Engine(db)
    engine.deploy({name: (FIXTURES / name).read_bytes() for name in LOOP_FILES}, "designer")
    return engine


def open_task_id(db: Database, instance_id: int) -> int:
    """The id of an instance's one open task: what a client would read from its inbox first."""
    with db.read() as s:
        found = s.execute(
            select(HumanTask.id).where(HumanTask.instance_id == instance_id, HumanTask.state == "open")
        ).scalar_one_or_none()
    if found is None:
        raise RuntimeError(f"instance {instance_id} has no open task; the loop fixture changed?")
    return found


def stored_state(db: Database, instance_id: int) -> bytes:
    with db.read() as s:
        return s.execute(select(Instance.state).where(Instance.id == instance_id)).scalar_one()


# --- 1 and 2: one completion, engine against raw SpiffWorkflow -------------------------------------


class EngineLoop:
    """One loop instance driven through ``Engine.complete``; ``step`` times one completion.

    Finding the open task id is a separate read (what a client does from its inbox first) and is
    not timed, so the figure is the cost of the command itself.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.instance_id = engine.start("loop", ACTOR, "B1", dict(START_DATA)).id
        self.done = 0

    def step(self) -> float:
        task_id = open_task_id(self.engine.db, self.instance_id)
        data = submission(self.done)
        started = time.perf_counter()
        self.engine.complete(task_id, ACTOR, data)
        elapsed = time.perf_counter() - started
        self.done += 1
        return elapsed

    def state(self) -> bytes:
        return stored_state(self.engine.db, self.instance_id)


class RawLoop:
    """The loop in plain SpiffWorkflow, in memory, serialized with its own serializer after each step.

    SpiffWorkflow alone keeps every completed task (three more per round), while the engine cuts
    old history (engine/history.py) and stays at about 26 tasks. Comparing against an ever-growing
    tree would flatter the engine, so ``restart`` starts a fresh workflow every so many completions
    (untimed), which keeps the raw tree the same size as the engine's. ``restart=None`` never
    restarts: that is what the compaction saves, printed for context.
    """

    def __init__(self, script_engine: PythonScriptEngine, restart: int | None) -> None:
        parser = SpiffBpmnParser(validator=VALIDATOR)
        parser.add_bpmn_file(str(FIXTURES / "loop.bpmn"))
        self.spec = parser.get_spec("loop")
        self.serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(DEFAULT_CONFIG))
        self.script_engine = script_engine
        self.restart = restart
        self.done = 0
        self.workflow = self._fresh()

    def _fresh(self) -> BpmnWorkflow:
        workflow = BpmnWorkflow(self.spec, script_engine=self.script_engine)
        for task in workflow.get_tasks(state=TaskState.READY):
            task.data.update(START_DATA)
        workflow.do_engine_steps()
        self.serializer.serialize_json(workflow)
        return workflow

    def step(self) -> float:
        if self.restart and self.done and self.done % self.restart == 0:
            self.workflow = self._fresh()
        workflow = self.workflow
        data = submission(self.done)
        started = time.perf_counter()
        ready = workflow.get_tasks(state=TaskState.READY, manual=True)
        if len(ready) != 1:  # past depth 1000 SpiffWorkflow's task iterator stops looking
            raise RuntimeError(f"raw SpiffWorkflow lost its ready task after {self.done} completions")
        task = ready[0]
        task.data.update(data)
        task.run()
        workflow.do_engine_steps()
        self.serializer.serialize_json(workflow)
        elapsed = time.perf_counter() - started
        self.done += 1
        return elapsed


RAW_RESTART = 10  # 3 to 33 tasks in the raw tree, like the engine's compacted ~26


def overhead(sizes: Sizes) -> None:
    """Figure 1: what the durable path costs per completion over SpiffWorkflow in memory.

    The four loops take turns, one completion each, so that a slower or faster stretch of the
    machine (other work, CPU frequency) lands on all of them alike instead of skewing the ratio.
    """
    n = sizes.overhead_completions
    raw = RawLoop(make_script_engine(2.0), RAW_RESTART)
    plain = RawLoop(PythonScriptEngine(), RAW_RESTART)
    growing = RawLoop(make_script_engine(2.0), None)
    timed: dict[str, list[float]] = {"engine": [], "raw": [], "plain": [], "growing": []}
    with sqlite_database("overhead") as db:
        engine = EngineLoop(loop_engine(db))
        gc.collect()
        for _ in range(n):
            timed["engine"].append(engine.step())
            timed["raw"].append(raw.step())
            timed["plain"].append(plain.step())
            timed["growing"].append(growing.step())
    engine_ms, raw_ms = median_ms(timed["engine"]), median_ms(timed["raw"])
    note(f"overhead: {n} completions on each side, interleaved; medians; raw restarts every {RAW_RESTART}")
    emit("engine_completion_ms", engine_ms)
    emit("raw_completion_ms", raw_ms)
    emit("raw_unsandboxed_completion_ms", median_ms(timed["plain"]))
    emit("overhead_ratio", engine_ms / raw_ms)
    grown = len(growing.workflow.tasks)
    note(f"raw SpiffWorkflow never restarted ({n} completions, its tree grows to {grown} tasks; "
         "it loses its ready task past ~333 rounds):")
    emit("raw_growing_completion_ms", median_ms(timed["growing"]))


def state_notes(label: str, state: bytes) -> None:
    """Uncompressed size and task count of a stored state, to tell growth of data from growth of tree."""
    body = zlib.decompress(state)
    tasks = len(json.loads(body).get("tasks", {}))
    note(f"{label}: {len(state)} bytes stored, {len(body)} bytes JSON, {tasks} tasks in the tree")


def nth_completion(sizes: Sizes) -> None:
    """Figure 2: does a long-lived instance slow down as its history grows?

    One instance runs to completion nth-5. Then its window nth-4..nth+5 is timed in turns with
    completions 6..15 of a second, fresh instance in the same database, so both windows see the
    same machine and the same table sizes and the ratio is about the instance's own history. The
    plain sequential ratio (completions 6..15 of the first instance, timed minutes earlier) is
    printed too. The figure is the median of the pairwise ratios: each pair ran within ~20 ms.
    """
    nth = sizes.nth
    states: dict[int, bytes] = {}
    with sqlite_database("nth") as db:
        engine = loop_engine(db)
        long = EngineLoop(engine)
        gc.collect()
        sequential: list[float] = []
        while long.done < nth - 5:
            sequential.append(long.step())
            if long.done == 10:
                states[10] = long.state()
        fresh = EngineLoop(engine)
        for _ in range(5):
            fresh.step()
        early: list[float] = []
        late: list[float] = []
        for _ in range(10):
            late.append(long.step())
            early.append(fresh.step())
            if long.done == nth:
                states[nth] = long.state()
    note(f"nth: one loop instance to completion {nth + 5}; window {nth - 4}-{nth + 5} timed in turns "
         "with completions 6-15 of a fresh instance")
    note(f"median completion ms: early {median_ms(early):.3f}, late {median_ms(late):.3f} "
         f"(ratio of medians {median_ms(late) / median_ms(early):.3f}); sequential ratio against "
         f"completions 6-15 of the same instance {median_ms(late) / median_ms(sequential[5:15]):.3f}")
    emit("nth_iteration", nth)
    emit("nth_completion_ratio", statistics.median(a / b for a, b in zip(late, early, strict=True)))
    emit("state_bytes_at_10", len(states[10]))
    emit(f"state_bytes_at_{nth}", len(states[nth]))
    state_notes("state at 10", states[10])
    state_notes(f"state at {nth}", states[nth])


# --- 3: the inbox over a big human_task table ------------------------------------------------------


@dataclass
class OrgNode:
    id: int
    code: str
    parent_id: int | None
    kind: str


@dataclass
class Directory:
    """What the bulk fill needs to know about the directory it made."""

    orgs: dict[int, OrgNode]
    user_ids: list[int]
    members: dict[int, list[int]]  # org id -> user ids holding any role there
    held: dict[int, list[str]]  # org id -> roles someone holds there
    keys: dict[int, int]  # user id -> how many candidate keys (memberships) the user answers to

    def chain(self, org_id: int) -> list[int]:
        out: list[int] = []
        current: int | None = org_id
        while current is not None:
            out.append(current)
            current = self.orgs[current].parent_id
        return out


HQ_ROLES = (("party_committee", 3), ("party_office", 6), ("review_committee", 7), ("auditor", 3))


def build_directory(db: Database, n_orgs: int, n_users: int, rng: random.Random) -> Directory:
    """A committee, general branches and branches, with people through ``engine.directory``.

    Everyone holds a role in one branch (secretary, member or masses representative); HQ staff,
    general-branch secretaries and about a quarter of the rest hold a second role elsewhere, so
    every user is in 1-2 organisations, as in a real party organisation.
    """
    n_general = max(1, round(n_orgs / 11))
    n_branches = n_orgs - 1 - n_general
    grants: list[tuple[str, str, str]] = []
    with db.write() as s:
        hq = add_org(s, "HQ", "公司党委", None, "committee")
        generals = [
            add_org(s, f"G{g:02d}", f"第{g + 1}党总支", "HQ", "general_branch") for g in range(n_general)
        ]
        branches = [
            add_org(s, f"B{b:03d}", f"第{b + 1}党支部", generals[b % n_general].code, "branch")
            for b in range(n_branches)
        ]
        usernames = [f"u{i:05d}" for i in range(n_users)]
        user_ids = [add_user(s, name, f"用户{i}").id for i, name in enumerate(usernames)]
        for i, name in enumerate(usernames):  # primary membership: a branch
            branch = branches[i % n_branches]
            if i < n_branches:
                role = "branch_secretary"
            else:
                role = "masses" if rng.random() < 0.1 else "party_member"
            grants.append((name, branch.code, role))
        second = iter(rng.sample(range(n_users), n_users))
        for role, count in HQ_ROLES:
            grants.extend((usernames[next(second)], "HQ", role) for _ in range(count))
        for general in generals:
            grants.append((usernames[next(second)], general.code, "branch_secretary"))
        for i in second:
            if rng.random() < 0.25:
                other = branches[(i % n_branches + 1 + rng.randrange(n_branches - 1)) % n_branches]
                grants.append((usernames[i], other.code, "party_member"))
        for name, code, role in grants:
            grant(s, name, code, role)
        orgs = {o.id: OrgNode(o.id, o.code, o.parent_id, o.kind) for o in [hq, *generals, *branches]}
    by_code = {o.code: o.id for o in orgs.values()}
    by_name = dict(zip(usernames, user_ids, strict=True))
    members: dict[int, list[int]] = {}
    held: dict[int, list[str]] = {}
    for name, code, role in grants:
        org_id = by_code[code]
        members.setdefault(org_id, []).append(by_name[name])
        if role not in held.setdefault(org_id, []):
            held[org_id].append(role)
    keys = {by_name[n]: 0 for n in usernames}
    for name, _code, _role in grants:
        keys[by_name[name]] += 1
    note(f"directory: {len(orgs)} organisations ({n_general} general branches, {n_branches} branches), "
         f"{n_users} users, {len(grants)} memberships, max {max(keys.values())} per user")
    return Directory(orgs, user_ids, members, held, keys)


STAGES = ("申报", "审核", "评审", "公示", "签约")
TITLES = ("党员先锋岗建设", "主题党日活动", "三会一课记录", "党费收缴", "组织生活会")


def fill_inbox_tables(db: Database, directory: Directory, sizes: Sizes, rng: random.Random) -> None:
    """Bulk-insert instances and open tasks with Core inserts: as 100k processes would leave them."""
    now = datetime.now(UTC)
    branches = [o.id for o in directory.orgs.values() if o.kind == "branch"]
    n_instances = sizes.inbox_tasks // sizes.tasks_per_instance
    with db.write() as s:
        definition = Definition(
            process_key="approval", name="项目申报审批", version=1, content_hash="bench" * 8,
            sources={}, deployed_by="designer", deployed_at=now,
        )
        s.add(definition)
        s.flush()
        definition_id = definition.id
    instance_rows = []
    for i in range(n_instances):
        org_id = rng.choice(branches)
        instance_rows.append({
            "definition_id": definition_id, "process_key": "approval", "status": "running",
            "business_key": f"bench-{i}", "org_id": org_id, "stage": rng.choice(STAGES),
            "title": rng.choice(TITLES), "started_by_id": rng.choice(directory.members[org_id]),
            "revision": 1, "state": b"", "data": {}, "started_at": now, "updated_at": now,
        })
    with db.engine.begin() as conn:
        for chunk in chunks(instance_rows, 5000):
            conn.execute(Instance.__table__.insert(), chunk)
        instances = conn.execute(
            select(Instance.id, Instance.org_id, Instance.started_by_id).order_by(Instance.id)
        ).all()
    task_rows = []
    for instance_id, org_id, started_by in instances:
        chain = directory.chain(org_id)
        offers = [(o, r) for o in chain for r in directory.held.get(o, [])]
        for k in range(sizes.tasks_per_instance):
            task_rows.append(task_row(rng, directory, instance_id, org_id, started_by, offers, k, now))
    with db.engine.begin() as conn:
        for chunk in chunks(task_rows, 5000):
            conn.execute(HumanTask.__table__.insert(), chunk)
    assigned = sum(1 for r in task_rows if r["assignee_id"] is not None)
    note(f"human_task: {len(task_rows)} open tasks in {len(instances)} instances; "
         f"{assigned} assigned, {len(task_rows) - assigned} offered to a role")


def task_row(
    rng: random.Random, directory: Directory, instance_id: int, org_id: int, started_by: int,
    offers: list[tuple[int, str]], k: int, now: datetime,
) -> dict[str, Any]:
    """One open task: 30% assigned (owner, initiator or claimed), the rest offered to a held role.

    Offers favour the instance's own branch, then its general branch, then the committee, as the
    lanes of real processes (branch secretary, party office, review committee) do.
    """
    weights = [6 if o == org_id else (3 if directory.orgs[o].parent_id is not None else 1) for o, _ in offers]
    offer_org, role = rng.choices(offers, weights)[0]
    candidate: str | None = f"org:{offer_org}:{role}"
    assignee: int | None = None
    assignment: str | None = None
    roll = rng.random()
    if roll < 0.1:
        assignee, assignment, candidate = rng.choice(directory.members[org_id]), "owner", None
    elif roll < 0.2:
        assignee, assignment, candidate = started_by, "initiator", None
    elif roll < 0.3:
        assignee, assignment = rng.choice(directory.members[offer_org]), "claim"
    return {
        "instance_id": instance_id, "task_guid": str(uuid.UUID(int=rng.getrandbits(128))),
        "task_spec": f"step_{k}", "title": f"{rng.choice(TITLES)}·第{k + 1}步", "form": "review.json",
        "lane": None if candidate is None else role, "org_id": org_id, "process_key": "approval",
        "stage": rng.choice(STAGES), "candidate_key": candidate, "assignee_id": assignee,
        "assignment": assignment, "priority": rng.randrange(3),
        "due_at": now + timedelta(hours=rng.randrange(-72, 24 * 14)), "state": "open", "created_at": now,
    }


def chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@contextmanager
def captured_task_query(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """Record the SQL the inbox sends for human_task, exactly as the driver gets it."""
    seen: list[tuple[str, Any]] = []

    def listen(conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if "FROM human_task" in statement:
            seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)


def print_plan(db: Database, statement: str, params: Any) -> None:
    """EXPLAIN QUERY PLAN on SQLite, EXPLAIN ANALYZE on PostgreSQL, as ``#`` lines."""
    with db.engine.connect() as conn:
        if db.postgres:
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).all()
            lines = [r[0] for r in rows]
        else:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
            depth: dict[int, int] = {0: 0}
            lines = []
            for node, parent, _unused, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                lines.append("  " * (depth[node] - 1) + detail)
    note("  query: " + re.sub(r"^SELECT .*? FROM", "SELECT <columns> FROM", " ".join(statement.split())))
    for line in lines:
        note("plan: " + line)


def inbox_latency(db: Database, sizes: Sizes, suffix: str) -> None:
    """Figure 3: p50/p95 of the inbox for random users, over a bulk-filled table.

    PostgreSQL is measured after ANALYZE (autovacuum does that soon after a bulk load). SQLite is
    measured as the engine leaves it, without statistics, and then once more after ANALYZE
    (``..._analyzed``), because statistics change its plan for this query.
    """
    rng = random.Random(SEED)
    directory = build_directory(db, sizes.inbox_orgs, sizes.inbox_users, rng)
    fill_inbox_tables(db, directory, sizes, rng)
    users = [rng.choice(directory.user_ids) for _ in range(sizes.inbox_queries)]
    if db.postgres:
        analyze(db)
        measure_inbox(db, directory, users, suffix)
        return
    measure_inbox(db, directory, users, suffix)
    analyze(db)
    measure_inbox(db, directory, users, f"{suffix}_analyzed")


def analyze(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def measure_inbox(db: Database, directory: Directory, users: list[int], suffix: str) -> None:
    """Time ``inbox`` in a fresh read session per call, as a web request would; plans per key count."""
    for user_id in users[:10]:  # warm the pool, the statement caches and the page cache
        with db.read() as s:
            inbox(s, user_id)
    timings: list[float] = []
    by_keys: dict[int, list[float]] = {}
    rows = 0
    gc.collect()
    for user_id in users:
        started = time.perf_counter()
        with db.read() as s:
            found = inbox(s, user_id)
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        by_keys.setdefault(directory.keys[user_id], []).append(elapsed)
        rows += len(found)
    note(f"inbox{suffix}: {len(users)} queries for random users, {rows / len(users):.1f} rows on average "
         f"(limit 50), slowest {max(timings) * 1000:.3f} ms")
    for count, spent in sorted(by_keys.items()):
        note(f"  users with {count} membership(s): {len(spent)} queries, p50 {median_ms(spent):.3f} ms, "
             f"p95 {percentile_ms(spent, 95):.3f} ms")
    for count in sorted(by_keys):
        user_id = next(u for u in users if directory.keys[u] == count)
        with captured_task_query(db) as seen, db.read() as s:
            inbox(s, user_id)
        if seen:
            note(f"plan for a user with {count} membership(s):")
            print_plan(db, *seen[-1])
    emit(f"inbox_p50_ms{suffix}", median_ms(timings))
    emit(f"inbox_p95_ms{suffix}", percentile_ms(timings, 95))


# --- 4: throughput ---------------------------------------------------------------------------------


def throughput(db: Database, sizes: Sizes, suffix: str) -> None:
    """Figure 4: sequential starts and completions per second through the engine API."""
    engine = loop_engine(db)
    gc.collect()
    starting: list[float] = []
    instance_ids: list[int] = []
    for _ in range(sizes.throughput_instances):
        started = time.perf_counter()
        instance = engine.start("loop", ACTOR, "B1", dict(START_DATA))
        starting.append(time.perf_counter() - started)
        instance_ids.append(instance.id)
    completing: list[float] = []
    for round_no in range(sizes.throughput_rounds):
        for instance_id in instance_ids:
            task_id = open_task_id(db, instance_id)
            started = time.perf_counter()
            engine.complete(task_id, ACTOR, submission(round_no))
            completing.append(time.perf_counter() - started)
    note(f"throughput{suffix}: {len(instance_ids)} instances x {sizes.throughput_rounds} completions, "
         "sequential, one process")
    emit(f"starts_per_s{suffix}", len(starting) / sum(starting))
    emit(f"completions_per_s{suffix}", len(completing) / sum(completing))
    emit(f"completion_p95_ms{suffix}", percentile_ms(completing, 95))


# --- profile -------------------------------------------------------------------------------------


def profile(count: int = 20, warm: int = 40) -> None:
    """Where a completion's time goes: phases timed without a profiler, then cProfile's view.

    cProfile inflates Python-heavy code (SQLAlchemy's ORM above all), so the phase timings, which
    wrap a few engine functions with a clock for the duration of this run only, come first.
    """
    with sqlite_database("profile") as db:
        loop = EngineLoop(loop_engine(db))
        for _ in range(warm):
            loop.step()
        phase_breakdown(loop, 200)
        profiler = cProfile.Profile()
        for _ in range(count):
            task_id = open_task_id(db, loop.instance_id)
            data = submission(loop.done)
            profiler.enable()
            loop.engine.complete(task_id, ACTOR, data)
            profiler.disable()
            loop.done += 1
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    note(f"profile: {count} Engine.complete calls (completions {warm + 1}-{warm + count}), cumulative")
    note(out.getvalue().strip())
    layers: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        layer = layer_of(filename, name)
        layers[layer] = layers.get(layer, 0.0) + own
    total = sum(layers.values())
    note(f"own time by layer ({total / count * 1000:.2f} ms per completion under the profiler):")
    for layer, own in sorted(layers.items(), key=lambda item: -item[1]):
        note(f"  {layer:<28} {own / count * 1000:7.3f} ms  {own / total:6.1%}")


# (module, attribute, what it is, nested inside "finish"?)
PHASES: tuple[tuple[str, str, str, bool], ...] = (
    ("engine.state", "StateSerializer.loads", "load state (zlib, JSON, restore)", False),
    ("engine.forms", "validate", "form validation", False),
    ("engine.work", "UnitOfWork.run_engine", "task.run + do_engine_steps", False),
    ("engine.work", "UnitOfWork.finish", "finish: all of the below + flush", False),
    ("engine.work", "UnitOfWork._project_human_tasks", "  inbox projection", True),
    ("engine.work", "UnitOfWork._project_waits", "  timer/message projection", True),
    ("engine.work", "UnitOfWork._summarise", "  instance summary", True),
    ("engine.history", "compact", "  history compaction", True),
    ("engine.state", "StateSerializer.dumps", "  serialize state (JSON, zlib)", True),
    ("engine.audit", "append", "  audit chain append", True),
)


@contextmanager
def clocked(spent: dict[str, float]) -> Iterator[None]:
    """Wrap the PHASES functions with a clock for the duration of the block, then put them back."""
    restore: list[tuple[Any, str, Any]] = []
    for module_name, path, label, _nested in PHASES:
        owner: Any = importlib.import_module(module_name)
        *parents, attr = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, attr, None)
        if original is None:  # renamed in the engine: skip rather than fail the benchmark
            continue

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - started

        restore.append((owner, attr, original))
        setattr(owner, attr, timed)
    try:
        yield
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)


def phase_breakdown(loop: EngineLoop, count: int) -> None:
    """Milliseconds per completion in each phase of the unit of work, and SQL statements sent."""
    spent: dict[str, float] = {}
    statements: list[str] = []
    counting = [False]  # only the engine's own statements, not the test's task look-up

    def count_sql(conn: Connection, cursor: Any, statement: str, *rest: Any) -> None:
        if counting[0]:
            statements.append(statement.split(None, 1)[0].upper())

    wall = 0.0
    event.listen(loop.engine.db.engine, "before_cursor_execute", count_sql)
    try:
        with clocked(spent):
            for _ in range(count):
                task_id = open_task_id(loop.engine.db, loop.instance_id)
                data = submission(loop.done)
                counting[0] = True
                started = time.perf_counter()
                loop.engine.complete(task_id, ACTOR, data)
                wall += time.perf_counter() - started
                counting[0] = False
                loop.done += 1
    finally:
        event.remove(loop.engine.db.engine, "before_cursor_execute", count_sql)
    per = 1000.0 / count
    kinds = {kind: statements.count(kind) / count for kind in sorted(set(statements))}
    note(f"phases: {count} completions, {wall * per:.3f} ms each on average; "
         f"SQL per completion: " + ", ".join(f"{n:g} {kind}" for kind, n in kinds.items()))
    top = 0.0
    for _module, _path, label, nested in PHASES:
        if label in spent:
            note(f"  {label:<36} {spent[label] * per:7.3f} ms")
            top += 0.0 if nested else spent[label]
    note(f"  {'rest: sessions, reads, checks, commit':<36} {(wall - top) * per:7.3f} ms")


LAYERS = (
    ("sqlalchemy", "SQLAlchemy"),
    ("SpiffWorkflow", "SpiffWorkflow"),
    ("RestrictedPython", "sandbox (RestrictedPython)"),
    ("engine/sandbox", "sandbox (engine.sandbox)"),
    ("jsonschema", "jsonschema (forms)"),
    ("referencing", "jsonschema (forms)"),
    ("engine/", "engine (own code)"),
    ("/json/", "json"),
)


def layer_of(filename: str, name: str) -> str:
    """Which library a profiled function belongs to, by its file (C functions by their name)."""
    if filename == "~":  # a C function: name says whose
        for marker, layer in (("sqlite3", "sqlite3 (C)"), ("psycopg", "psycopg (C)"), ("zlib", "zlib"),
                              ("json", "json"), ("_hashlib", "hashlib"), ("compile", "compile/exec (C)"),
                              ("exec", "compile/exec (C)")):
            if marker in name:
                return layer
        return "other built-ins"
    for marker, layer in LAYERS:
        if marker in filename:
            return layer
    return "stdlib/other"


# --- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shrink everything; runs in under a minute")
    parser.add_argument(
        "--postgres", metavar="URL",
        help="also measure on PostgreSQL at URL; DROPS SCHEMA public CASCADE there",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of engine completions")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    note(f"qizhi engine benchmark ({'quick' if args.quick else 'full'}), python {sys.version.split()[0]}")
    overhead(sizes)
    nth_completion(sizes)
    with sqlite_database("inbox") as db:
        inbox_latency(db, sizes, "")
    with sqlite_database("throughput") as db:
        throughput(db, sizes, "")
    if args.postgres:
        with postgres_database(args.postgres) as db:
            throughput(db, sizes, "_postgres")
        with postgres_database(args.postgres) as db:
            inbox_latency(db, sizes, "_postgres")
    if args.profile:
        profile()
    note(f"total {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
