"""Demo organisation gradings (分类定级): this year's grading of four demo branches, at different stages.

Runs after ``web.demo.load_demo`` has created the directory and deployed ``org_grading``. Idempotent by
business key ``grading:{year}:{org code}``: a branch that already has this year's grading is left
alone, so only gradings started by this call are advanced and a second run adds nothing.

Where they end up:

- 机关党支部 (DEMO-JG): graded 好, done.
- 营销服务党支部 (DEMO-YX): self-assessed, waiting for the masses' initial view (群众初评).
- 变电运维党支部 (DEMO-BD): graded 一般, in 整改提高 with two items, one reported done.
- 输电运检党支部 (DEMO-SD): just started, waiting for its self-assessment (支部自评).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from engine import Engine
from engine.figures import CHINA
from engine.models import Definition, HumanTask, User

PROCESS = "org_grading"
STANDARDS = ("organisation", "members", "institutions", "centre", "foundation")
DEFAULT_ACTORS = {"party_office": "chenjing", "party_committee": "wangjianguo"}

# branch: (secretary, masses representative, how far, (self, masses, committee) scores)
PLAN: dict[str, tuple[str, str, str, tuple[float, float, float]]] = {
    "DEMO-JG": ("liuyang", "songjia", "graded", (19, 92, 19)),
    "DEMO-YX": ("majun", "tangming", "self", (17, 0, 0)),
    "DEMO-BD": ("dengchao", "duanwei", "rectifying", (15, 70, 13)),
    "DEMO-SD": ("jiangtao", "fangyuan", "", (0, 0, 0)),
}
ITEMS = [
    ("“三会一课”记录不完整", "补齐台账,支委每月检查", "xiaoyu", 30),
    ("党员活动阵地设施陈旧", "改造党员活动室,更新宣传栏", "chengpeng", 60),
]


def load(engine: Engine, actor_by_role: Mapping[str, Any] | None = None) -> list[int]:
    """Start (once) and advance this year's demo gradings; return the ids of the instances started now."""
    actors = {**DEFAULT_ACTORS, **dict(actor_by_role or {})}
    now = engine.clock()
    year = now.astimezone(CHINA).year
    with engine.db.read() as s:
        if s.execute(select(Definition.id).where(Definition.process_key == PROCESS).limit(1)).first() is None:
            return []
    started = []
    for org, (secretary, masses, goal, scores) in PLAN.items():
        instance, created = engine.start_once(
            PROCESS,
            actors["party_office"],
            org,
            f"grading:{year}:{org}",
            {"year": year, "title": f"{year} 年度分类定级"},
        )
        if not created:
            continue
        started.append(instance.id)
        _advance(engine, instance.id, secretary, masses, actors["party_committee"], goal, scores, now.date())
    return started


def _advance(
    engine: Engine,
    instance_id: int,
    secretary: str,
    masses: str,
    committee: str,
    goal: str,
    scores: tuple[float, float, float],
    today: Any,
) -> None:
    if not goal:
        return
    own, view, verdict = scores
    _do(
        engine,
        instance_id,
        "ut_self",
        secretary,
        {"self_scores": dict.fromkeys(STANDARDS, own), "self_summary": "对照标准逐项自评,详见佐证材料。"},
    )
    if goal == "self":
        return
    _do(
        engine,
        instance_id,
        "ut_masses",
        masses,
        {"masses_view": "满意" if view >= 80 else "基本满意", "masses_score": view},
    )
    _do(
        engine,
        instance_id,
        "ut_committee",
        committee,
        {"committee_scores": dict.fromkeys(STANDARDS, verdict), "committee_comment": "综合评定"},
    )
    if goal == "graded":
        return
    items = [
        {
            "item": item,
            "measure": measure,
            "owner": owner,
            "due_date": (today + timedelta(days=days)).isoformat(),
        }
        for item, measure, owner, days in ITEMS
    ]
    _do(
        engine,
        instance_id,
        "ut_plan",
        secretary,
        {"rectification_items": items, "plan_summary": "逐项整改,按期销号"},
    )
    _do(
        engine,
        instance_id,
        "ut_item",
        ITEMS[0][2],
        {"item_report": {"status": "已完成", "result": "台账已补齐,建立月检查制度"}},
    )


def _do(engine: Engine, instance_id: int, spec: str, actor: str, data: dict[str, Any]) -> None:
    """Complete the open ``spec`` task of the instance that is the actor's own, else its first one."""
    with engine.db.read() as s:
        rows = s.execute(
            select(HumanTask.id, User.username)
            .outerjoin(User, User.id == HumanTask.assignee_id)
            .where(
                HumanTask.instance_id == instance_id, HumanTask.task_spec == spec, HumanTask.state == "open"
            )
            .order_by(HumanTask.id)
        ).all()
    mine = [task_id for task_id, owner in rows if owner == actor]
    engine.complete(mine[0] if mine else rows[0][0], actor, data)
