"""A small known data set for the dashboard figures, written as the engine's projection rows.

The figures read only projections (``instance`` summary columns and data, their ``instance_fact``
rows, ``human_task`` rows), so
the set is written straight into those tables with every number counted by hand below; the tests
that drive the real processes (test_lifecycle, test_pledge_cycle, test_org_grading) check that the
processes write the data keys read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from engine import Database, facts
from engine.directory import add_org
from engine.models import Definition, HumanTask, Instance, Organisation, User

YEAR = 2026
NOW = datetime(2026, 9, 1, 4, 0, tzinfo=UTC)  # the clock the overdue figure is read at


def beijing(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC) - timedelta(hours=8)


@dataclass
class Known:
    """Instance ids of the known set, by the names the tests use."""

    ids: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    org: dict[str, int] = field(default_factory=dict)


def _definition(s: Any, key: str) -> int:
    found = s.execute(select(Definition.id).where(Definition.process_key == key)).scalar()
    if found is not None:
        return found
    row = Definition(
        process_key=key,
        name={"project_lifecycle": "党建项目化管理", "pledge_cycle": "党员承诺践诺"}.get(key, key),
        version=1,
        content_hash=key.ljust(64, "0")[:64],
        sources={},
        deployed_by="designer",
    )
    s.add(row)
    s.flush()
    return row.id


def _instance(
    s: Any,
    known: Known,
    name: str,
    process: str,
    org: str,
    data: dict[str, Any],
    stage: str | None,
    status: str = "running",
    ended_at: datetime | None = None,
) -> None:
    starter = s.execute(select(User.id).where(User.username == "office")).scalar_one()
    row = Instance(
        definition_id=_definition(s, process),
        process_key=process,
        org_id=known.org[org],
        stage=stage,
        status=status,
        title=data.get("title", name),
        started_by_id=starter,
        state=b"",
        data=data,
        started_at=beijing(YEAR, 1, 5),
        updated_at=beijing(YEAR, 1, 5),
        ended_at=ended_at,
    )
    s.add(row)
    s.flush()
    facts.refresh(s, row, None)  # as the unit of work keeps them
    known.ids[name] = row.id


def _task(s: Any, known: Known, name: str, instance: str, due: datetime | None, state: str = "open") -> None:
    inst = s.get(Instance, known.ids[instance])
    row = HumanTask(
        instance_id=inst.id,
        task_guid=f"guid-{name}",
        task_spec=name,
        title=f"任务{name}",
        org_id=inst.org_id,
        process_key=inst.process_key,
        stage=inst.stage,
        candidate_key=f"org:{inst.org_id}:branch_secretary",
        state=state,
        due_at=due,
        created_at=NOW - timedelta(days=30),
    )
    s.add(row)
    s.flush()
    known.tasks[name] = row.id


def approved(period_start: str, solved: list[str], **more: Any) -> dict[str, Any]:
    return {"initiation_decision": "立项", "period_start": period_start, "problems_solved": solved, **more}


def accepted(
    title: str, grade: str, score: float, solved: tuple[str, ...] = ("问题甲",), start: str = f"{YEAR}-02-01"
) -> dict[str, Any]:
    return approved(
        start,
        list(solved),
        title=title,
        outcome="结项",
        acceptance_grade=grade,
        acceptance_score=score,
        brand_name=f"{title}品牌",
    )


def load_known(db: Database) -> Known:
    """The set every figure test counts by hand (the test directory: HQ > B1 > B1G1, HQ > B2)."""
    known = Known()
    with db.write() as s:
        add_org(s, "B3", "第三党支部", "HQ")  # a branch with nothing at all this year
        known.org = {code: oid for oid, code in s.execute(select(Organisation.id, Organisation.code))}
        lc = "project_lifecycle"
        # projects (党建项目化管理)
        _instance(s, known, "P1", lc, "B1", approved("2026-03-01", []), "调研实践")
        _instance(
            s,
            known,
            "P2",
            lc,
            "B1",
            accepted("平安365", "优秀", 91.0),
            "总结推广",
            "completed",
            beijing(2026, 6, 30),
        )
        # ended at 00:30 on 1 January Beijing time: a 2026 project although it is still 2025 in UTC
        _instance(
            s,
            known,
            "P3",
            lc,
            "B1",
            {"initiation_decision": "不予立项", "outcome": "不予立项"},
            "计划立项",
            "completed",
            datetime(2025, 12, 31, 16, 30, tzinfo=UTC),
        )
        _instance(s, known, "P4", lc, "B2", {}, "计划立项")
        _instance(s, known, "P5", lc, "B2", approved("2025-05-01", ["旧问题"]), "动态管控", "failed")
        _instance(s, known, "P6", lc, "B1G1", approved("2026-02-01", ["小组问题"]), "任务分解")
        _instance(
            s,
            known,
            "P7",
            lc,
            "B2",
            accepted("去年项目", "良好", 85.0, start="2024-09-01"),
            "总结推广",
            "completed",
            beijing(2025, 6, 1),
        )
        for name, org, grade, score, solved in (
            ("P8", "B1", "良好", 84.0, ("问题乙",)),
            ("P9", "B1", "合格", 72.0, ("问题丙",)),
            ("P10", "B2", "优秀", 95.0, ()),
        ):
            _instance(
                s,
                known,
                name,
                lc,
                org,
                accepted(f"项目{name}", grade, score, solved),
                "总结推广",
                "completed",
                beijing(2026, 11, 20),
            )
        # pledge cycles (承诺践诺)
        pc = "pledge_cycle"
        pledges = [{"category": "学习"}] * 5
        _instance(
            s,
            known,
            "X1",
            pc,
            "B1",
            {
                "year": YEAR,
                "pledges": pledges[:3],
                "review_verdict": "approve",
                "results": [{"outcome": "按期兑现"}, {"outcome": "按期兑现"}, {"outcome": "逾期兑现"}],
                "reports": [{"late": True}, {"late": False}],
                "grade": "好",
                "score": 96.0,
            },
            "评议考核",
            "completed",
            beijing(2026, 12, 20),
        )
        _instance(
            s,
            known,
            "X2",
            pc,
            "B1",
            {"year": YEAR, "pledges": pledges[:2], "review_verdict": "return"},
            "党员承诺",
        )
        _instance(
            s,
            known,
            "X3",
            pc,
            "B2",
            {
                "year": YEAR,
                "pledges": pledges[:4],
                "review_verdict": "approve",
                "results": [{"outcome": "按期兑现"}] * 4,
                "reports": [],
                "grade": "差",
                "score": 70.0,
            },
            "评议考核",
        )
        _instance(s, known, "X4", pc, "B2", {"year": YEAR - 1, "pledges": pledges[:2]}, "党员承诺")
        _instance(s, known, "X5", pc, "B1", {"year": YEAR, "pledges": pledges[:2]}, "党员承诺", "terminated")
        # organisation gradings (分类定级)
        og = "org_grading"
        _instance(
            s,
            known,
            "G1",
            og,
            "B1",
            {"year": YEAR, "grade": "较好", "final_score": 85.0, "needs_rectification": False},
            "党委定级",
            "completed",
            beijing(2026, 12, 1),
        )
        _instance(
            s,
            known,
            "G2",
            og,
            "B2",
            {"year": YEAR, "grade": "较差", "final_score": 50.0, "needs_rectification": True},
            "晋位升级",
        )
        # tasks: two overdue in B1 (one project, one pledge), one in B2; the rest do not count
        _task(s, known, "T1", "P1", NOW - timedelta(days=2))
        _task(s, known, "T2", "P1", NOW + timedelta(days=2))
        _task(s, known, "T3", "P4", NOW - timedelta(days=10))
        _task(s, known, "T4", "P4", NOW - timedelta(days=5), state="completed")
        _task(s, known, "T5", "X2", NOW - timedelta(hours=1))
        _task(s, known, "T6", "P1", None)
    return known
