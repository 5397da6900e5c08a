"""Do the dashboard figures stay fast at a province's volume? Generate one, then time every figure query.

Run from the repository root::

    .venv/bin/python -m bench.province                       # PostgreSQL database qizhi_dash
    .venv/bin/python -m bench.province --url postgresql+psycopg://postgres@127.0.0.1:5432/other
    .venv/bin/python -m bench.province --reuse               # time again without regenerating

**It DROPS SCHEMA public CASCADE in the database it is given** and recreates it with the engine's
migrations (unless ``--reuse``). Never point it at a database whose data you want to keep.

What it generates (straight into the tables with COPY, as the engine's projections would look after a
year of use; the engine itself is not run 100,000 times):

- 5,000 organisations: a provincial committee, 50 company committees, 250 general branches (党总支),
  4,699 branches (党支部); a secretary and a masses representative in each grassroots organisation,
  one committee member and one office member per committee;
- 100,000 party members spread over the branches, each with this year's pledge cycle (承诺践诺):
  instance rows with a realistic ``data`` summary (2 KB of pledges, reports, results, scores) and an
  opaque ``state`` of ``--state-bytes``, at a year-end mix of stages (most evaluated), one open task
  for each running cycle (10% of them overdue) and ``--history`` completed tasks per cycle;
- 5,000 projects (党建项目化管理) at every stage, 40% approved this year, those past acceptance with
  the problems they solved, some accepted and closed; their open tasks (a quarter overdue);
- one grading (分类定级) per grassroots organisation, graded or under way.

Then every dashboard query (engine.figures, engine.reports, engine.excellence) is timed ``--runs``
times in a fresh read session, for three viewers: the provincial committee (everything), one
company committee (~100 organisations) and one branch secretary. Output: one
``name_p50_ms=… name_p95_ms=…`` line per query and viewer, and ``#`` context lines (sizes, plans
with --explain). The target is 200 ms per query; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select, text

from engine import Database, Engine, excellence, facts, figures, reports
from engine.directory import add_user, grant
from engine.models import (
    HumanTask,
    Instance,
    Membership,
    Organisation,
    User,
)
from web.workflows import discover

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/qizhi_dash"
COMMITTEES, GENERAL_BRANCHES_EACH, BRANCHES = 50, 5, 4699
MEMBERS, PROJECTS = 100_000, 5_000
NOW = datetime.now(UTC)
YEAR = NOW.astimezone(figures.CHINA).year
CATEGORIES = ("学习", "工作", "自律", "服务")
LIFECYCLE_STAGES = figures.LIFECYCLE_STAGES


# --- generation ----------------------------------------------------------------------------------


def _copy(db: Database, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    """COPY rows (dicts by column name; absent columns get their Python default) into a table."""
    columns = [c for c in table.columns]
    names = ", ".join(f'"{c.name}"' for c in columns)
    defaults = {c.name: _default(c) for c in columns}
    count = 0
    raw = db.engine.raw_connection()
    try:
        with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                values = []
                for c in columns:
                    value = row[c.name] if c.name in row else defaults[c.name]
                    if isinstance(value, (dict, list)):
                        value = json.dumps(value, ensure_ascii=False)
                    values.append(value)
                copy.write_row(values)
                count += 1
        raw.commit()
    finally:
        raw.close()
    return count


def _default(column: Any) -> Any:
    default = column.default
    if default is None or not default.is_scalar:
        return None
    return default.arg


def _reset_sequences(db: Database, tables: Sequence[str]) -> None:
    with db.engine.begin() as conn:
        for name in tables:
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
            )


def _pledge_data(
    rng: random.Random, username: str, name: str, peers: list[str], stage: str
) -> dict[str, Any]:
    count = rng.randint(2, 5)
    pledges = [
        {
            "category": rng.choice(CATEGORIES),
            "target": f"立足岗位,全年完成第{i + 1}项目标,完成率 100%",
            "measure": "按月对照目标自查,问题当月整改,每季度向支部报告",
            "deadline": f"{YEAR}-{rng.randint(6, 12):02d}-{rng.randint(1, 28):02d}",
        }
        for i in range(count)
    ]
    data: dict[str, Any] = {
        "title": f"{YEAR} 年党员承诺践诺 · {name}",
        "member": username,
        "member_name": name,
        "post": "党员责任岗",
        "year": YEAR,
        "peers": peers,
        "period": "P3M",
        "quarters": 4,
        "remind_after": "P15D",
        "warn_after": "P15D",
        "pledges": pledges,
    }
    if stage == "党员承诺":
        return data
    returned = stage == "returned"
    data["review_verdict"] = "return" if returned else "approve"
    data["pledge_comments"] = ["请量化" if returned else "同意"] * count
    if returned or stage == "支部审诺":
        return data
    data.update(sign_location="办公区党员责任岗标识牌", published_on=f"{YEAR}-02-01", published=True)
    quarters = 4 if stage == "评议考核" else rng.randint(1, 3)
    data["reports"] = [
        {
            "quarter": q,
            "late": rng.random() < 0.1,
            "progress": [{"pledge": 1, "status": "推进中", "note": "按计划推进", "evidence": ["记录.pdf"]}],
        }
        for q in range(1, quarters + 1)
    ]
    data["progress_status"] = f"第{quarters}季度已报告"
    if stage != "评议考核":
        return data
    outcomes = rng.choices(("按期兑现", "逾期兑现", "未兑现"), weights=(80, 15, 5), k=count)
    data.update(
        account="全年承诺基本兑现,个别事项因工作调整逾期。",
        results=[{"pledge": i + 1, "outcome": o} for i, o in enumerate(outcomes)],
        self_score=rng.randint(80, 100),
    )
    score = round(rng.gauss(88, 6), 1)
    data.update(
        peer_scores=[rng.randint(75, 100) for _ in peers[:20]],
        masses_score=rng.randint(70, 100),
        branch_score=rng.randint(70, 100),
        w_self=10,
        w_peer=30,
        w_masses=20,
        w_branch=40,
        score=score,
        grade="好" if score >= 95 else "中" if score >= 80 else "差",
        kept_on_time=outcomes.count("按期兑现"),
    )
    return data


def _project_data(rng: random.Random, org: str, n: int, stage: str, status: str) -> dict[str, Any]:
    this_year = rng.random() < 0.8
    start = f"{YEAR if this_year else YEAR - 1}-{rng.randint(1, 10):02d}-01"
    data: dict[str, Any] = {
        "title": f"{org} 党建项目 {n}",
        "project_type": rng.choice(("创新探索型", "典型示范型", "制度推广型")),
        "problems": ["青年职工参与度不高", "组织生活形式单一", "党员作用发挥不明显"][: rng.randint(1, 3)],
        "goals": "形成可复制推广的工作机制",
        "measures": "党员责任区、每日讲评、季度比武",
        "milestones": ["一季度完成方案", "三季度中期评估"],
        "budget": rng.randint(5, 50) * 1000,
        "period_start": start,
        "period_end": f"{YEAR}-12-31",
        "control_period": "P30D",
    }
    if stage == "计划立项":
        return data
    data.update(initiation_decision="立项", initiation_score=round(rng.uniform(80, 95), 2))
    data["work_items"] = [
        {"owner": "member", "deliverable": f"成果{i}", "due_date": f"{YEAR}-09-30"} for i in range(3)
    ]
    if stage in ("任务分解", "调研实践", "动态管控"):
        return data
    data.update(
        summary="项目总结",
        self_score=rng.randint(80, 100),
        problems_solved=data["problems"][: rng.randint(0, 3)],
        acceptance_score=round(rng.uniform(65, 98), 1),
    )
    data["acceptance_grade"] = "优秀" if data["acceptance_score"] >= 90 else "良好"
    if status == "completed":
        data.update(
            theory_outcomes=["经验材料"],
            institution_outcomes=["工作制度"],
            brand_name=f"品牌{n}",
            recommended_excellent=rng.random() < 0.3,
            outcome="结项",
        )
    return data


class Generator:
    def __init__(self, db: Database, seed: int, state_bytes: int, history: int) -> None:
        self.db = db
        self.rng = random.Random(seed)
        self.state_blobs = [random.Random(seed + i).randbytes(state_bytes) for i in range(64)]
        self.history = history
        self.next_task = 1

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        with self.db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        self.db.upgrade()
        engine = Engine(self.db)
        with self.db.write() as s:
            s.add(Organisation(id=1, code="P", name="省公司党委", kind="committee"))
            s.flush()
            add_user(s, "designer")
            grant(s, "designer", "P", "designer")
        definitions = {}
        for bundle in discover():
            definitions[bundle.process_key] = engine.deploy(bundle.files, "designer", bundle.process_key).id
        orgs = self._organisations()
        users, members_of, holders = self._people(orgs)
        print(f"# generated directory: {len(orgs)} organisations, {users} people", flush=True)
        pledges, ptasks = self._pledges(definitions["pledge_cycle"], members_of, holders)
        projects, jtasks = self._projects(definitions["project_lifecycle"], orgs, holders)
        gradings = self._gradings(definitions["org_grading"], orgs, holders)
        _reset_sequences(self.db, ["organisation", "app_user", "membership", "instance", "human_task"])
        t1 = time.perf_counter()
        with self.db.write() as s:  # what the unit of work would have kept: the figure facts
            facts_written = facts.rebuild(s, "designer").facts
        rebuild_s = round(time.perf_counter() - t1, 1)
        with self.db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        return {
            "organisations": len(orgs),
            "people": users,
            "pledge_cycles": pledges,
            "projects": projects,
            "gradings": gradings,
            "human_tasks": ptasks + jtasks,
            "instance_facts": facts_written,
            "facts_rebuild_s": rebuild_s,
            "generate_s": round(time.perf_counter() - t0, 1),
        }

    def _organisations(self) -> list[tuple[int, str, str, int | None]]:
        """(id, code, kind, parent id), the provincial committee (id 1) first."""
        orgs: list[tuple[int, str, str, int | None]] = []
        next_id = 2
        committees = []
        for c in range(COMMITTEES):
            orgs.append((next_id, f"C{c:02d}", "committee", 1))
            committees.append(next_id)
            next_id += 1
        generals = []
        for parent in committees:
            for _g in range(GENERAL_BRANCHES_EACH):
                orgs.append((next_id, f"G{next_id}", "general_branch", parent))
                generals.append(next_id)
                next_id += 1
        for b in range(BRANCHES):
            orgs.append((next_id, f"B{next_id}", "branch", generals[b % len(generals)]))
            next_id += 1
        names = {"committee": "公司党委", "general_branch": "党总支", "branch": "党支部"}
        _copy(
            self.db,
            Organisation.__table__,
            (
                {"id": i, "code": code, "name": f"{code}{names[kind]}", "kind": kind, "parent_id": p}
                for i, code, kind, p in orgs
            ),
        )
        return [(1, "P", "committee", None), *orgs]

    def _people(
        self, orgs: list[tuple[int, str, str, int | None]]
    ) -> tuple[int, dict[int, list[str]], dict[tuple[int, str], str]]:
        grassroots = [o for o in orgs if o[2] in ("branch", "general_branch")]
        branches = [o for o in orgs if o[2] == "branch"]
        users: list[dict[str, Any]] = []
        grants: list[tuple[str, int, str]] = []
        holders: dict[tuple[int, str], str] = {}
        members_of: dict[int, list[str]] = {o[0]: [] for o in branches}

        def person(username: str, org: int, role: str) -> None:
            users.append(
                {
                    "username": username,
                    "display_name": username,
                    "active": True,
                    "created_at": NOW,
                    "failed_logins": 0,
                }
            )
            grants.append((username, org, role))
            holders.setdefault((org, role), username)

        person("province_committee", 1, "party_committee")
        person("province_office", 1, "party_office")
        for org_id, code, kind, _parent in orgs:
            if kind == "committee" and org_id != 1:
                person(f"cm_{code}", org_id, "party_committee")
                person(f"of_{code}", org_id, "party_office")
        for org_id, code, _kind, _parent in grassroots:
            person(f"sec_{code}", org_id, "branch_secretary")
            person(f"ms_{code}", org_id, "masses")
        for n in range(MEMBERS):
            org_id = branches[n % len(branches)][0]
            username = f"m{n:06d}"
            person(username, org_id, "party_member")
            members_of[org_id].append(username)
        first_id = 2  # id 1 is the designer
        ids = {}
        for i, row in enumerate(users):
            row["id"] = first_id + i
            ids[row["username"]] = row["id"]
        _copy(self.db, User.__table__, users)
        _copy(
            self.db,
            Membership.__table__,
            ({"id": 2 + i, "user_id": ids[u], "org_id": o, "role": r} for i, (u, o, r) in enumerate(grants)),
        )
        self.user_ids = ids
        return len(users) + 1, members_of, holders

    def _task_rows(
        self,
        instance_id: int,
        org_id: int,
        process: str,
        stage: str | None,
        open_spec: str | None,
        overdue_share: float,
        lane: str,
    ) -> list[dict[str, Any]]:
        rows = []
        for h in range(self.history):
            rows.append(
                self._task(
                    instance_id,
                    org_id,
                    process,
                    stage,
                    f"done_{h}",
                    lane,
                    "completed",
                    NOW - timedelta(days=200 - h * 10),
                )
            )
        if open_spec:
            late = self.rng.random() < overdue_share
            due = (
                NOW - timedelta(days=self.rng.randint(1, 30))
                if late
                else NOW + timedelta(days=self.rng.randint(1, 30))
            )
            rows.append(self._task(instance_id, org_id, process, stage, open_spec, lane, "open", due))
        return rows

    def _task(
        self,
        instance_id: int,
        org_id: int,
        process: str,
        stage: str | None,
        spec: str,
        lane: str,
        state: str,
        due: datetime,
    ) -> dict[str, Any]:
        task_id = self.next_task
        self.next_task += 1
        return {
            "id": task_id,
            "instance_id": instance_id,
            "task_guid": f"{instance_id:08d}-0000-0000-0000-{task_id:012d}",
            "task_spec": spec,
            "title": spec,
            "form": f"{spec}.json",
            "lane": lane,
            "org_id": org_id,
            "process_key": process,
            "stage": stage,
            "candidate_key": f"org:{org_id}:{lane}",
            "priority": 0,
            "due_at": due,
            "state": state,
            "created_at": due - timedelta(days=14),
            "completed_at": due if state == "completed" else None,
        }

    def _instance(
        self,
        instance_id: int,
        definition: int,
        process: str,
        org_id: int,
        stage: str | None,
        status: str,
        data: dict[str, Any],
        key: str | None,
        starter: int,
    ) -> dict[str, Any]:
        started = datetime(YEAR, 1, 10, tzinfo=figures.CHINA) + timedelta(minutes=instance_id % 50_000)
        ended = None
        if status == "completed":
            ended = min(NOW, started + timedelta(days=self.rng.randint(200, 330)))
        return {
            "id": instance_id,
            "definition_id": definition,
            "process_key": process,
            "status": status,
            "business_key": key,
            "org_id": org_id,
            "stage": stage,
            "title": data.get("title"),
            "started_by_id": starter,
            "revision": self.rng.randint(5, 40),
            "state": self.state_blobs[instance_id % len(self.state_blobs)],
            "data": data,
            "started_at": started,
            "updated_at": ended or NOW - timedelta(days=self.rng.randint(0, 60)),
            "ended_at": ended,
        }

    def _pledges(
        self, definition: int, members_of: dict[int, list[str]], holders: dict[tuple[int, str], str]
    ) -> tuple[int, int]:
        stages = ["党员承诺", "returned", "支部审诺", "监督践诺", "评议考核", "done"]
        weights = [4, 2, 3, 16, 20, 55]
        instances: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []
        next_id = 1
        for org_id, members in members_of.items():
            starter = self.user_ids[holders[(org_id, "branch_secretary")]]
            for username in members:
                pick = self.rng.choices(stages, weights)[0]
                stage = {"returned": "党员承诺", "done": "评议考核"}.get(pick, pick)
                data = _pledge_data(
                    self.rng,
                    username,
                    username,
                    [m for m in members if m != username],
                    "评议考核" if pick == "done" else pick,
                )
                status = "completed" if pick == "done" else "running"
                instances.append(
                    self._instance(
                        next_id,
                        definition,
                        "pledge_cycle",
                        org_id,
                        stage,
                        status,
                        data,
                        f"pledge:{YEAR}:{username}",
                        starter,
                    )
                )
                open_spec = (
                    None
                    if status == "completed"
                    else {
                        "党员承诺": "ut_commit",
                        "支部审诺": "ut_review",
                        "监督践诺": "ut_report",
                        "评议考核": "ut_branch_rate",
                    }[stage]
                )
                tasks += self._task_rows(
                    next_id, org_id, "pledge_cycle", stage, open_spec, 0.10, "branch_secretary"
                )
                next_id += 1
        _copy(self.db, Instance.__table__, instances)
        _copy(self.db, HumanTask.__table__, tasks)
        self.next_instance = next_id
        return len(instances), len(tasks)

    def _projects(
        self,
        definition: int,
        orgs: list[tuple[int, str, str, int | None]],
        holders: dict[tuple[int, str], str],
    ) -> tuple[int, int]:
        grassroots = [o for o in orgs if o[2] in ("branch", "general_branch")]
        instances, tasks = [], []
        for n in range(PROJECTS):
            org_id, code, _kind, _parent = grassroots[self.rng.randrange(len(grassroots))]
            pick = self.rng.choices([*LIFECYCLE_STAGES, "closed"], [8, 6, 14, 14, 10, 4, 20])[0]
            status = "completed" if pick == "closed" else "running"
            stage = "总结推广" if pick == "closed" else pick
            data = _project_data(self.rng, code, n, stage, status)
            instance_id = self.next_instance
            self.next_instance += 1
            starter = self.user_ids[holders[(org_id, "branch_secretary")]]
            instances.append(
                self._instance(
                    instance_id, definition, "project_lifecycle", org_id, stage, status, data, None, starter
                )
            )
            tasks += self._task_rows(
                instance_id,
                org_id,
                "project_lifecycle",
                stage,
                None if status == "completed" else "supervise",
                0.25,
                "party_office",
            )
        _copy(self.db, Instance.__table__, instances)
        _copy(self.db, HumanTask.__table__, tasks)
        return len(instances), len(tasks)

    def _gradings(
        self,
        definition: int,
        orgs: list[tuple[int, str, str, int | None]],
        holders: dict[tuple[int, str], str],
    ) -> int:
        grassroots = [o for o in orgs if o[2] in ("branch", "general_branch")]
        rows = []
        for org_id, _code, _kind, _parent in grassroots:
            score = round(min(100, max(40, self.rng.gauss(82, 9))), 1)
            grade = "好" if score >= 90 else "较好" if score >= 80 else "一般" if score >= 60 else "较差"
            done = self.rng.random() < 0.7
            data: dict[str, Any] = {"year": YEAR, "title": f"{YEAR} 年度分类定级"}
            stage = "支部自评"
            if done:
                data.update(final_score=score, grade=grade, needs_rectification=grade in ("一般", "较差"))
                stage = "晋位升级" if data["needs_rectification"] else "党委定级"
            status = "completed" if done and not data.get("needs_rectification") else "running"
            instance_id = self.next_instance
            self.next_instance += 1
            starter = self.user_ids[holders[(1, "party_office")]]
            rows.append(
                self._instance(
                    instance_id,
                    definition,
                    "org_grading",
                    org_id,
                    stage,
                    status,
                    data,
                    f"grading:{YEAR}:{org_id}",
                    starter,
                )
            )
        _copy(self.db, Instance.__table__, rows)
        return len(rows)


# --- timing --------------------------------------------------------------------------------------


def timed(db: Database, runs: int, query: Callable[[Any], Any]) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        with db.read() as s:
            t0 = time.perf_counter()
            result = query(s)
            times.append((time.perf_counter() - t0) * 1000)
    return times, result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def viewers(db: Database) -> dict[str, int]:
    with db.read() as s:

        def uid(name: str) -> int:
            return s.execute(select(User.id).where(User.username == name)).scalar_one()

        secretary = s.execute(
            select(User.username).where(User.username.like("sec_B%")).order_by(User.id).limit(1)
        ).scalar_one()
        return {"province": uid("province_committee"), "company": uid("cm_C00"), "branch": uid(secretary)}


def time_all(db: Database, runs: int) -> list[tuple[str, list[float], str]]:
    out = []
    for viewer, user_id in viewers(db).items():
        times, scope = timed(db, runs, lambda s, u=user_id: figures.dashboard_scope(s, u))
        within = scope.org_ids
        size = "all" if within is None else str(len(within))
        out.append((f"scope_{viewer}", times, f"{size} organisations"))
        one = next(iter(sorted(within))) if within else None
        queries: list[tuple[str, Callable[[Any], Any]]] = [
            ("projects_by_stage", lambda s, w=within: figures.projects_by_stage(s, YEAR, w)),
            ("overdue_tasks", lambda s, w=within: figures.overdue_tasks(s, NOW, w)),
            ("yearly_compliance", lambda s, w=within: reports.yearly_compliance(s, YEAR, within=w)),
            ("pledge_year_figures", lambda s, w=within: reports.pledge_year_figures(s, YEAR, within=w)),
            ("org_grades", lambda s, w=within: figures.org_grades(s, YEAR, w)),
            ("excellent_candidates", lambda s, w=within: excellence.candidates(s, YEAR, w)),
        ]
        branch = _a_branch(db) if one is None else _first_branch(db, within)
        queries += [
            ("drill_pledges", lambda s, b=branch: reports.pledges_behind(s, YEAR, b, "made")),
            ("drill_overdue", lambda s, b=branch: figures.overdue_behind(s, NOW, b, None)),
            ("drill_projects", lambda s, b=branch: figures.projects_behind(s, YEAR, b, None)),
        ]
        for name, query in queries:
            times, result = timed(db, runs, query)
            rows = len(result) if hasattr(result, "__len__") else ""
            out.append((f"{name}_{viewer}", times, f"{rows} rows"))
    return out


def _a_branch(db: Database) -> int:
    with db.read() as s:
        return s.execute(
            select(Organisation.id).where(Organisation.kind == "branch").order_by(Organisation.id).limit(1)
        ).scalar_one()


def _first_branch(db: Database, within: frozenset[int]) -> int:
    with db.read() as s:
        return s.execute(
            select(Organisation.id)
            .where(Organisation.kind == "branch", Organisation.id.in_(sorted(within)))
            .order_by(Organisation.id)
            .limit(1)
        ).scalar_one()


def sizes(db: Database) -> str:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
                "WHERE relname IN ('instance', 'instance_fact', 'human_task', 'organisation', 'app_user', "
                "'membership') "
                "ORDER BY relname"
            )
        )
        return ", ".join(f"{name} {size}" for name, size in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.province", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (its schema public is DROPPED)")
    parser.add_argument("--reuse", action="store_true", help="time the existing data, do not regenerate")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query (default 7)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--state-bytes", type=int, default=2500, help="size of each instance's opaque state")
    parser.add_argument("--history", type=int, default=6, help="completed tasks per instance (default 6)")
    args = parser.parse_args(argv)
    if not args.url.startswith("postgresql"):
        parser.error("the province benchmark runs on PostgreSQL: give --url postgresql+psycopg://...")
    db = Database(args.url)
    if not args.reuse:
        made = Generator(db, args.seed, args.state_bytes, args.history).run()
        print("# " + ", ".join(f"{k}={v}" for k, v in made.items()), flush=True)
    with db.read() as s:
        count = s.execute(select(func.count()).select_from(Instance)).scalar_one()
    print(f"# year {YEAR}; {count} instances; sizes: {sizes(db)}", flush=True)
    slow = []
    for name, times, note in time_all(db, args.runs):
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        print(f"{name}_p50_ms={p50:.1f} {name}_p95_ms={p95:.1f}  # {note}", flush=True)
        if p95 > 200:
            slow.append(name)
    print(f"# over the 200 ms target (p95): {', '.join(slow) if slow else 'none'}")
    db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
