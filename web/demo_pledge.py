"""Demo pledge cycles (党员承诺践诺): one per member of three demo branches, at different stages.

Runs after ``web.demo.load_demo`` (which creates the directory and deploys ``pledge_cycle``).
Idempotent by business key ``pledge:{year}:{username}``: a member who already has this year's cycle
is left alone, so only cycles started by this call are advanced, and a second run adds nothing.

Where the cycles end up (this year):

- 机关党支部 (DEMO-JG): one cycle published and in 监督践诺, one waiting for 支部审诺, one returned
  to the member with comments, one not yet written.
- 营销服务党支部 (DEMO-YX): two published (监督践诺), two waiting in 党员承诺.
- 变电运维党支部 (DEMO-BD): all started, waiting in 党员承诺.

Data the public board (挂牌亮诺) reads from ``instance.data``: ``post``, ``member``, ``member_name``,
``year``, ``pledges`` (each ``category``/``target``/``measure``/``deadline``), ``published`` (True
once the branch has hung the sign), ``sign_location``, ``published_on`` and ``progress_status``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from engine import Engine
from engine.directory import holders
from engine.models import Definition, HumanTask, Instance

PROCESS = "pledge_cycle"
TIMING = {"period": "P3M", "quarters": 4, "remind_after": "P15D", "warn_after": "P15D"}

POSTS = {
    "yangfan": "党建宣传责任岗",
    "huangli": "财务合规责任岗",
    "zhaolei": "综合服务责任岗",
    "qianjin": "档案管理责任岗",
    "zhuting": "客户服务窗口责任岗",
    "hujie": "电费回收责任岗",
    "guoqing": "用电检查责任岗",
    "linna": "营业厅服务责任岗",
    "xiaoyu": "变电站值班责任岗",
    "chengpeng": "设备巡视责任岗",
    "yuanfang": "倒闸操作责任岗",
    "panlong": "安全监督责任岗",
}


def _pledges(year: int, post: str) -> list[dict[str, str]]:
    return [
        {
            "category": "学习",
            "target": "每月参加支部集中学习并自学党章党规 1 次",
            "measure": "学习笔记每季度交支部检查",
            "deadline": f"{year}-12-31",
        },
        {
            "category": "工作",
            "target": f"立足{post},全年岗位目标完成率 100%",
            "measure": "按月对照目标自查,问题当月整改",
            "deadline": f"{year}-12-15",
        },
        {
            "category": "服务",
            "target": "结对帮带 1 名青年职工",
            "measure": "每季度谈心 1 次、共同完成 1 项改进",
            "deadline": f"{year}-11-30",
        },
    ]


# What to do with each member's new cycle: how far to take it.
PLAN: dict[str, list[tuple[str, str]]] = {
    "DEMO-JG": [("yangfan", "published"), ("huangli", "submitted"), ("zhaolei", "returned"), ("qianjin", "")],
    "DEMO-YX": [("zhuting", "published"), ("hujie", "published"), ("guoqing", ""), ("linna", "")],
    "DEMO-BD": [("xiaoyu", ""), ("chengpeng", ""), ("yuanfang", ""), ("panlong", "")],
}


def load(engine: Engine, actor_by_role: dict[str, str]) -> list[int]:
    """Start (and advance) this year's demo pledge cycles; return the ids of the instances started now.

    ``actor_by_role["party_office"]`` starts the cycles (the office may start work in every branch);
    branch secretaries and members act as themselves, found in the directory. Nothing happens if
    ``pledge_cycle`` is not deployed.
    """
    starter = actor_by_role.get("party_office", "chenjing")
    year = engine.clock().year
    with engine.db.read() as s:
        if s.execute(select(Definition.id).where(Definition.process_key == PROCESS).limit(1)).first() is None:
            return []
    started: list[int] = []
    for branch, plan in PLAN.items():
        with engine.db.read() as s:
            members = dict(holders(s, branch, "party_member"))
            secretaries = [u for u, _ in holders(s, branch, "branch_secretary")]
            known = set(
                s.execute(
                    select(Instance.business_key).where(
                        Instance.process_key == PROCESS,
                        Instance.business_key.like(f"pledge:{year}:%"),
                    )
                ).scalars()
            )
        if not secretaries:
            continue
        secretary = secretaries[0]
        for username, goal in plan:
            key = f"pledge:{year}:{username}"
            if username not in members or key in known:
                continue
            post = POSTS.get(username, "党员责任岗")
            data = {
                "title": f"{year} 年党员承诺践诺 · {members[username]}",
                "member": username,
                "member_name": members[username],
                "post": post,
                "year": year,
                "peers": sorted(u for u in members if u != username),
                **TIMING,
            }
            instance = engine.start(PROCESS, starter, branch, data, business_key=key)
            started.append(instance.id)
            _advance(engine, instance.id, username, secretary, goal, _pledges(year, post), year)
    return started


def _advance(
    engine: Engine, instance_id: int, member: str, secretary: str, goal: str, pledges: list[Any], year: int
) -> None:
    if not goal:
        return
    _do(engine, instance_id, "ut_commit", member, {"pledges": pledges})
    if goal == "submitted":
        return
    if goal == "returned":
        comments = ["请写明学习的具体篇目", "请量化“目标完成率”的口径", "请明确帮带对象"]
        _do(
            engine,
            instance_id,
            "ut_review",
            secretary,
            {"review_verdict": "return", "pledge_comments": comments, "review_comment": "请修改后再报"},
        )
        return
    _do(
        engine,
        instance_id,
        "ut_review",
        secretary,
        {"review_verdict": "approve", "pledge_comments": ["同意", "同意", "同意"]},
    )
    _do(
        engine,
        instance_id,
        "ut_publish",
        secretary,
        {"sign_location": "办公区党员责任岗标识牌", "published_on": f"{year}-02-01"},
    )


def _do(engine: Engine, instance_id: int, spec: str, actor: str, data: dict[str, Any]) -> None:
    with engine.db.read() as s:
        task_id = s.execute(
            select(HumanTask.id).where(
                HumanTask.instance_id == instance_id, HumanTask.task_spec == spec, HumanTask.state == "open"
            )
        ).scalar_one()
    engine.complete(task_id, actor, data)
