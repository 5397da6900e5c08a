"""Demo projects for the six-step lifecycle (党建项目化管理), each stopped at a different stage.

``load(engine, actor_by_role)`` starts them in the demo branches of web/demo.py and drives them
through the engine as the people whose tasks they are, so the inbox, the stage column and the audit
trail look like real use. Idempotent: a project whose business key exists is left as it is.
Needs ``project_lifecycle`` deployed (the demo loader deploys workflows/ first).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from engine import Engine, NotFound
from engine.models import Instance
from web.demo import ACCOUNTS

PROCESS = "project_lifecycle"
DEFAULT_ACTORS: dict[str, Any] = {
    "party_office": "chenjing",
    "party_committee": "wangjianguo",
    "review_committee": ["zhoumin", "wuqiang", "zhengyu", "fengxue", "hanlei"],
}

# (business key, branch, application, how far to drive it)
PROJECTS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "lifecycle:DEMO-BD:平安365",
        "DEMO-BD",
        {
            "title": "平安“365”安全管控机制",
            "project_type": "创新探索型",
            "problems": ["青年职工安全意识薄弱", "班组安全学习形式单一"],
            "goals": "全年零违章,青年职工安全培训全覆盖",
            "measures": "党员安全责任区、每日安全讲评、季度技能比武",
            "milestones": ["一季度完成方案", "三季度中期评估"],
            "budget": 30000,
        },
        "control",
    ),
    (
        "lifecycle:DEMO-YX:党员画像",
        "DEMO-YX",
        {
            "title": "“党员画像”实践活动",
            "project_type": "典型示范型",
            "problems": ["党员作用发挥不明显", "群众参与度不高"],
            "goals": "画出党员真实面貌,做到以知促行",
            "measures": "自己画、民主评、立行改、齐心做",
            "budget": 12000,
        },
        "decomposition",
    ),
    (
        "lifecycle:DEMO-SD:先锋岗",
        "DEMO-SD",
        {
            "title": "“1+3党员先锋岗”创建",
            "project_type": "制度推广型",
            "problems": ["先锋岗标准不统一"],
            "goals": "五个党小组认领五个先锋岗",
            "measures": "制定五型党支部创建标准",
            "budget": 8000,
        },
        "scoring",
    ),
    (
        "lifecycle:DEMO-JG:机关标准化",
        "DEMO-JG",
        {
            "title": "机关党支部标准化建设",
            "project_type": "制度推广型",
            "problems": ["组织生活记录不规范", "三会一课质量不高"],
            "goals": "形成机关支部工作标准手册",
            "measures": "对标检查、台账规范、示范观摩",
            "budget": 5000,
        },
        "check",
    ),
]


def _people(org: str, role: str) -> list[str]:
    return [u for u, _, roles in ACCOUNTS if (org, role) in roles]


def load(engine: Engine, actor_by_role: Mapping[str, Any] | None = None) -> list[int]:
    """Start (once) the demo projects and drive each to its stage; return their instance ids."""
    actors = {**DEFAULT_ACTORS, **dict(actor_by_role or {})}
    judges = actors["review_committee"]
    judges = [judges] if isinstance(judges, str) else list(judges)
    ids = []
    for key, org, app, stop in PROJECTS:
        with engine.db.read() as s:
            found = s.execute(
                select(Instance.id).where(Instance.process_key == PROCESS, Instance.business_key == key)
            ).scalar()
        if found is not None:
            ids.append(found)
            continue
        secretary = _people(org, "branch_secretary")[0]
        try:
            inst = engine.start(PROCESS, secretary, org, {"title": app["title"]}, business_key=key)
        except NotFound:  # the lifecycle is not deployed: nothing to show
            return ids
        ids.append(inst.id)
        _drive(engine, inst.id, org, secretary, app, stop, actors, judges)
    return ids


def _drive(
    engine: Engine,
    instance_id: int,
    org: str,
    secretary: str,
    app: dict[str, Any],
    stop: str,
    actors: Mapping[str, Any],
    judges: list[str],
) -> None:
    today = date.today()

    def do(user: str, spec: str, data: dict[str, Any]) -> None:
        task = next(t for t in engine.inbox(user) if t.instance_id == instance_id and t.task_spec == spec)
        engine.complete(task.id, user, data)

    office, committee = actors["party_office"], actors["party_committee"]
    do(
        secretary,
        "apply",
        {**app, "period_start": today.isoformat(), "period_end": (today + timedelta(days=270)).isoformat()},
    )
    if stop == "check":
        return
    do(office, "check", {"verdict": "approve", "comments": "材料齐全"})
    do(office, "convene", {"meeting_date": today.isoformat(), "judges": judges})
    if stop == "scoring":
        return
    for i, judge in enumerate(judges):
        do(
            judge,
            "score",
            {
                "score_sheet": {
                    "plan_quality": 22,
                    "track_record": 21 + i % 3,
                    "credibility": 23,
                    "capability": 20 + i % 4,
                }
            },
        )
    do(committee, "sign_committee", {"signed": True, "signed_on": today.isoformat()})
    do(secretary, "sign_branch", {"signed": True, "signed_on": today.isoformat()})
    if stop == "decomposition":
        return
    members = _people(org, "party_member")
    items = [
        {
            "owner": members[0],
            "deliverable": "实施方案细则",
            "due_date": (today + timedelta(days=30)).isoformat(),
        },
        {
            "owner": members[1],
            "deliverable": "阶段成效总结",
            "due_date": (today + timedelta(days=120)).isoformat(),
        },
    ]
    do(secretary, "decompose", {"work_items": items})
    do(office, "plan_review", {"plan_verdict": "approve"})
