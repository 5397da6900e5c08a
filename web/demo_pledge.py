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

The published posts get a few masses' feedback entries (群众监督), one of them an advert the
branch secretary has hidden, so /board and /board/moderate have something to show. A post that
already has feedback is left alone, so this too adds nothing on a second run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from engine import Engine
from engine import board as board_model
from engine.directory import holders, org_by_code, user_by_name
from engine.models import BoardFeedback, Definition, HumanTask, Instance

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
        _feedback(engine, branch, secretary, year)
    return started


# Feedback the masses leave on a published post, by the member's username: (author, message),
# oldest first; a third element is the reason the branch secretary hid it.
FEEDBACK: dict[str, list[tuple[str | None, str, str | None]]] = {
    "yangfan": [
        ("王师傅", "支部学习园地更新很及时，宣传栏的内容也通俗易懂，点个赞！", None),
        (None, "建议把每季度的学习笔记也在公示栏展示一下，方便大家一起学。", None),
        (None, "高价回收废旧电缆、变压器，量大从优，联系微信 cable-888。", "广告"),
    ],
    "zhuting": [("居民李阿姨", "上周在营业厅办业务，窗口的同志耐心讲解电费账单，很满意。", None)],
    "hujie": [(None, "催缴电费时态度很好，还帮我们开通了线上缴费，希望继续保持。", None)],
}


def _feedback(engine: Engine, branch: str, secretary: str, year: int) -> None:
    """Leave the demo feedback on the branch's published posts that have none yet (one unit per post)."""
    now = engine.clock()
    with engine.db.read() as s:
        posts = board_model.branch_posts(s, org_by_code(s, branch).id, year, now)
        ids = {p.id for p in posts}
        done = set(
            s.execute(select(BoardFeedback.instance_id).where(BoardFeedback.instance_id.in_(ids))).scalars()
        )
        members = dict(
            s.execute(
                select(Instance.id, Instance.data["member"].as_string()).where(Instance.id.in_(ids))
            ).all()
        )
    for post in posts:
        entries = FEEDBACK.get(members.get(post.id) or "", [])
        if post.id in done or not entries:
            continue
        with engine.db.write() as s:
            for n, (author, body, hide_reason) in enumerate(entries):
                # Demo entries come from no real address: a distinct made-up one each, so no cap applies.
                address = board_model.address_hash("qizhi-demo", f"demo:{post.id}:{n}")
                entry = board_model.post_feedback(s, post.id, author, body, address, now)
                entry.created_at = now - timedelta(hours=2 * (len(entries) - n))  # spread over the day
                if hide_reason:
                    moderator = user_by_name(s, secretary)
                    board_model.set_hidden(s, entry.id, moderator, True, hide_reason, now)


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
