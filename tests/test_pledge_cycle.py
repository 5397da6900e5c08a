"""The yearly pledge cycle (党员承诺践诺), driven end to end through the engine as the people its lanes name.

Deploys the real files (workflows/pledge_cycle.bpmn, workflows/pledge_*.dmn, forms/pledge_*.json).
Five stages, each an expanded sub-process: 党员承诺 → 支部审诺 → 挂牌亮诺 → 监督践诺 → 评议考核.

``start_year`` is a candidate for the engine; the year figures are ``engine.reports.pledge_year_figures``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine import Engine, Forbidden
from engine.directory import add_user, grant
from engine.models import AuditEvent, Instance
from engine.queries import instance_view
from engine.reports import pledge_year_figures
from tests.helpers import assert_chain_intact, inbox_of, later, only_task

ROOT = Path(__file__).resolve().parent.parent
PROCESS = "pledge_cycle"
YEAR = 2026
STAGES = ["党员承诺", "支部审诺", "挂牌亮诺", "监督践诺", "评议考核"]
TIMING = {"period": "P90D", "quarters": 4, "remind_after": "P10D", "warn_after": "P10D"}
POSTS = {"member1": "变电运维责任岗", "member2": "安全监督责任岗", "member4": "客户服务责任岗"}
PLEDGES = [
    {
        "category": "学习",
        "target": "全年自学党章党规 12 次",
        "measure": "每月一次,写心得",
        "deadline": "2026-12-31",
    },
    {
        "category": "工作",
        "target": "设备缺陷处理及时率 100%",
        "measure": "当班发现当班处理",
        "deadline": "2026-11-30",
    },
    {
        "category": "服务",
        "target": "结对帮扶 2 名青年职工",
        "measure": "每季度谈心一次",
        "deadline": "2026-12-15",
    },
]
PROGRESS = [{"pledge": 1, "status": "推进中", "note": "已学 3 次", "evidence": ["学习笔记.pdf"]}]


def pledge_files() -> dict[str, bytes]:
    paths = [ROOT / "workflows" / "pledge_cycle.bpmn"]
    paths += sorted((ROOT / "workflows").glob("pledge_*.dmn"))
    paths += sorted((ROOT / "forms").glob("pledge_*.json"))
    return {p.name: p.read_bytes() for p in paths}


@pytest.fixture
def pledge(engine: Engine) -> Engine:
    """The engine with the pledge cycle deployed, a masses representative and a third member in B1."""
    with engine.db.write() as s:
        add_user(s, "masses1", "群众代表甲")
        grant(s, "masses1", "B1", "masses")
        add_user(s, "masses2", "群众代表乙")
        grant(s, "masses2", "B2", "masses")
        add_user(s, "member4", "党员丁")
        grant(s, "member4", "B1", "party_member")
    engine.deploy(pledge_files(), "designer", PROCESS)
    return engine


# --- bulk start: what the engine should offer -----------------------------------------------------


def start_year(
    engine: Engine,
    branch_code: str,
    year: int,
    actor: str,
    posts: dict[str, str] | None = None,
    timing: dict[str, Any] | None = None,
) -> list[int]:
    """Start one pledge cycle per party member of the branch, keyed ``pledge:{year}:{username}``.

    Engine.start_for_members skips members who already have one for the year (a unique business
    key decides races), so running it again starts only for members added since. ``peers`` (the
    branch's other members) feeds the 党员互评 multi-instance. Returns the ids started by this call.
    """

    def own(username: str, display_name: str, everyone: list[str]) -> dict[str, Any]:
        return {
            "title": f"{year} 年党员承诺践诺 · {display_name}",
            "post": (posts or {}).get(username, "党员责任岗"),
            "peers": [u for u in everyone if u != username],
        }

    results = engine.start_for_members(
        PROCESS,
        actor,
        branch_code,
        f"pledge:{year}",
        {"year": year, **TIMING, **(timing or {})},
        data_for=own,
    )
    return [instance.id for _, instance, created in results if created]


# --- driving the cycle ---------------------------------------------------------------------------


def steps(engine: Engine, instance_id: int) -> list[list[str]]:
    """The engine steps of each command on the instance, from the audit trail."""
    with engine.db.read() as s:
        events = s.execute(
            select(AuditEvent)
            .where(AuditEvent.instance_id == instance_id, AuditEvent.action == "engine.steps")
            .order_by(AuditEvent.seq)
        ).scalars()
        return [e.payload["completed"] for e in events]


def view(engine: Engine, instance_id: int):  # type: ignore[no-untyped-def]
    with engine.db.read() as s:
        return instance_view(s, instance_id)


def task_of(engine: Engine, username: str, spec: str, instance_id: int):  # type: ignore[no-untyped-def]
    tasks = [t for t in inbox_of(engine, username) if t.task_spec == spec and t.instance_id == instance_id]
    assert len(tasks) == 1, (
        f"{username} has {[(t.task_spec, t.instance_id) for t in inbox_of(engine, username)]}"
    )
    return tasks[0]


def commit_and_approve(engine: Engine, inst: int, member: str = "member1", sec: str = "sec1") -> None:
    engine.complete(task_of(engine, member, "ut_commit", inst).id, member, {"pledges": PLEDGES})
    engine.complete(
        task_of(engine, sec, "ut_review", inst).id,
        sec,
        {"review_verdict": "approve", "pledge_comments": ["可行", "已量化", "贴合岗位"]},
    )


def publish(engine: Engine, inst: int, sec: str = "sec1") -> None:
    engine.complete(
        task_of(engine, sec, "ut_publish", inst).id,
        sec,
        {"sign_location": "变电站主控室门口", "published_on": "2026-02-01"},
    )


def quarter(engine: Engine, inst: int, member: str = "member1", number: int = 1, sec: str = "sec1") -> None:
    """One on-time quarter: the timer opens the report, the member reports, the branch comments."""
    assert engine.run_due_jobs(later(91)) >= 1
    engine.complete(task_of(engine, member, "ut_report", inst).id, member, {"progress": PROGRESS})
    engine.complete(
        task_of(engine, sec, "ut_comment", inst).id, sec, {"quarter_comment": f"第{number}季度讲评"}
    )
    if number == 2:
        engine.complete(
            task_of(engine, sec, "ut_half", inst).id,
            sec,
            {"halfyear_review": "进度正常", "halfyear_on_track": True},
        )


def evaluate(
    engine: Engine,
    inst: int,
    member: str,
    scores: dict[str, float],
    peers: list[str],
    sec: str = "sec1",
    masses: str = "masses1",
) -> None:
    engine.complete(
        task_of(engine, member, "ut_account", inst).id,
        member,
        {
            "account": "全年承诺基本兑现",
            "results": [
                {"pledge": 1, "outcome": "按期兑现"},
                {"pledge": 2, "outcome": "按期兑现"},
                {"pledge": 3, "outcome": "逾期兑现", "note": "帮扶对象调岗"},
            ],
            "self_score": scores["self"],
        },
    )
    for rater in peers:
        engine.complete(task_of(engine, rater, "ut_peer", inst).id, rater, {"peer_score": scores["peer"]})
    engine.complete(task_of(engine, masses, "ut_masses", inst).id, masses, {"masses_score": scores["masses"]})
    engine.complete(task_of(engine, sec, "ut_branch_rate", inst).id, sec, {"branch_score": scores["branch"]})


def full_year(
    engine: Engine,
    inst: int,
    member: str,
    scores: dict[str, float],
    peers: list[str],
    sec: str = "sec1",
    masses: str = "masses1",
) -> None:
    commit_and_approve(engine, inst, member, sec)
    publish(engine, inst, sec)
    for number in range(1, 5):
        quarter(engine, inst, member, number, sec)
    evaluate(engine, inst, member, scores, peers, sec, masses)


# --- tests ---------------------------------------------------------------------------------------


def test_approved_first_time_walks_the_five_stages_as_the_right_people(pledge: Engine) -> None:
    (inst, *_) = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    stages = [view(pledge, inst).stage]

    # the member's tasks belong to the member (owner), not to every member of the branch
    commit = only_task(pledge, "member1", "ut_commit")
    assert commit.stage == "党员承诺" and commit.assignment == "owner"
    assert [t for t in inbox_of(pledge, "member2") if t.instance_id == inst] == []
    with pytest.raises(Forbidden):
        pledge.complete(commit.id, "member2", {"pledges": PLEDGES})
    pledge.complete(commit.id, "member1", {"pledges": PLEDGES})
    stages.append(view(pledge, inst).stage)

    review = task_of(pledge, "sec1", "ut_review", inst)
    assert [t for t in inbox_of(pledge, "sec2") if t.instance_id == inst] == []  # another branch's secretary
    pledge.complete(review.id, "sec1", {"review_verdict": "approve", "pledge_comments": ["好", "好", "好"]})
    stages.append(view(pledge, inst).stage)
    publish(pledge, inst)
    stages.append(view(pledge, inst).stage)

    board = view(pledge, inst).data  # what the public board (挂牌亮诺) reads
    assert board["post"] == "变电运维责任岗" and board["member_name"] == "党员甲"
    assert board["published"] is True and board["pledges"] == PLEDGES
    assert board["progress_status"] == "已公示,待第1季度报告"

    for number in range(1, 5):
        quarter(pledge, inst, "member1", number)
    stages.append(view(pledge, inst).stage)
    evaluate(
        pledge, inst, "member1", {"self": 90, "peer": 90, "masses": 90, "branch": 90}, ["member2", "member4"]
    )

    final = view(pledge, inst)
    assert stages == STAGES
    assert final.status == "completed"
    assert [r["quarter"] for r in final.data["reports"]] == [1, 2, 3, 4]
    assert not any(r["late"] for r in final.data["reports"]) and final.data["reminders"] == []
    assert final.data["peer_scores"] == [90, 90]
    assert final.data["halfyear_review"] == "进度正常"
    assert_chain_intact(pledge)


def test_returned_pledges_go_back_with_comments_until_approved(pledge: Engine) -> None:
    (inst, *_) = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    pledge.complete(only_task(pledge, "member1", "ut_commit").id, "member1", {"pledges": PLEDGES[:2]})
    comments = ["请量化学习次数", "请写明及时率口径"]
    for _round in range(2):
        pledge.complete(
            task_of(pledge, "sec1", "ut_review", inst).id,
            "sec1",
            {"review_verdict": "return", "pledge_comments": comments, "review_comment": "退回修改"},
        )
        again = only_task(pledge, "member1", "ut_commit")
        state = view(pledge, inst)
        assert state.stage == "党员承诺"
        assert state.data["pledge_comments"] == comments and state.data["review_verdict"] == "return"
        pledge.complete(again.id, "member1", {"pledges": PLEDGES, "revision_note": "已按意见修改"})
    pledge.complete(
        task_of(pledge, "sec1", "ut_review", inst).id,
        "sec1",
        {"review_verdict": "approve", "pledge_comments": ["同意", "同意", "同意"]},
    )
    state = view(pledge, inst)
    assert state.stage == "挂牌亮诺" and state.data["pledges"] == PLEDGES
    assert state.data["revision_note"] == "已按意见修改"


def test_pledge_form_is_strict_two_to_five_pledges(pledge: Engine) -> None:
    from engine import ValidationFailed

    start_year(pledge, "B1", YEAR, "sec1", POSTS)
    task = only_task(pledge, "member1", "ut_commit")
    with pytest.raises(ValidationFailed) as err:
        pledge.complete(task.id, "member1", {"pledges": PLEDGES[:1]})
    assert "pledges" in err.value.fields
    with pytest.raises(ValidationFailed) as err:
        pledge.complete(task.id, "member1", {"pledges": [{**PLEDGES[0], "category": "娱乐"}, PLEDGES[1]]})
    assert "pledges.0.category" in err.value.fields


def test_a_late_quarter_raises_a_reminder_then_a_warning(pledge: Engine) -> None:
    (inst, *_) = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    commit_and_approve(pledge, inst)
    publish(pledge, inst)

    assert pledge.run_due_jobs(later(91)) >= 1  # quarter 1 starts (and reminders of earlier tasks)
    first = only_task(pledge, "member1", "ut_report")
    assert first.due_at is not None and first.stage == "监督践诺"

    assert pledge.run_due_jobs(later(11)) >= 1  # not reported 10 days later: reminder, report reopened
    reopened = only_task(pledge, "member1", "ut_report")
    assert reopened.id != first.id
    assert [t for t in inbox_of(pledge, "sec1") if t.instance_id == inst] == []  # no warning yet
    assert {"bt_late", "sc_remind"} <= set(steps(pledge, inst)[-1]) and "sc_warn" not in steps(pledge, inst)[
        -1
    ]

    assert pledge.run_due_jobs(later(22)) >= 1  # still nothing 10 days after the reminder: warning
    warn = task_of(pledge, "sec1", "ut_warn", inst)
    assert warn.priority == 2 and warn.stage == "监督践诺"
    assert {"bt_late", "sc_warn"} <= set(steps(pledge, inst)[-1]) and "sc_remind" not in steps(pledge, inst)[
        -1
    ]
    assert [t for t in inbox_of(pledge, "member1") if t.instance_id == inst] == []  # report waits for it
    pledge.complete(warn.id, "sec1", {"warning_note": "已与本人谈话,要求三日内提交"})

    pledge.complete(only_task(pledge, "member1", "ut_report").id, "member1", {"progress": PROGRESS})
    pledge.complete(
        task_of(pledge, "sec1", "ut_comment", inst).id, "sec1", {"quarter_comment": "提醒按时报告"}
    )
    for number in (2, 3, 4):  # the next quarters start clean and are on time
        quarter(pledge, inst, "member1", number)

    state = view(pledge, inst)  # the stage's data reaches the instance when the stage ends (engine gap)
    assert state.stage == "评议考核"
    assert [r["late"] for r in state.data["reports"]] == [True, False, False, False]
    assert state.data["reminders"] == [1] and state.data["warnings"] == [1]
    assert state.data["warning_note"] == "已与本人谈话,要求三日内提交"
    assert state.data["progress_status"] == "第4季度已报告"
    assert_chain_intact(pledge)


@pytest.mark.parametrize(
    ("scores", "grade", "vanguard", "delist"),
    [
        ({"self": 100, "peer": 96, "masses": 95, "branch": 95}, "好", True, False),  # 95.8
        ({"self": 90, "peer": 95, "masses": 90, "branch": 94}, "中", False, False),  # 93.1
        ({"self": 80, "peer": 70, "masses": 60, "branch": 65}, "差", False, True),  # 67.0
        ({"self": 95, "peer": 95, "masses": 95, "branch": 95}, "好", True, False),  # 95.0: the edge of 好
        ({"self": 80, "peer": 80, "masses": 80, "branch": 80}, "中", False, False),  # 80.0: the edge of 中
        ({"self": 79, "peer": 80, "masses": 80, "branch": 80}, "差", False, True),  # 79.9
    ],
)
def test_grade_bands_come_from_the_dmn(
    pledge: Engine, scores: dict[str, float], grade: str, vanguard: bool, delist: bool
) -> None:
    (inst, *_) = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    full_year(pledge, inst, "member1", scores, ["member2", "member4"])
    if delist:  # 差: the branch secretary must decide on the post (摘牌审议) before the cycle ends
        task = task_of(pledge, "sec1", "ut_delist", inst)
        assert task.stage == "评议考核" and task.priority == 2
        pledge.complete(task.id, "sec1", {"delist_decision": "摘牌", "delist_reason": "全年践诺不到位"})
    else:
        assert [t for t in inbox_of(pledge, "sec1") if t.instance_id == inst] == []
    data = view(pledge, inst).data
    assert view(pledge, inst).status == "completed"
    assert (data["w_self"], data["w_peer"], data["w_masses"], data["w_branch"]) == (10, 30, 20, 40)
    expected = (
        scores["self"] * 10 + scores["peer"] * 30 + scores["masses"] * 20 + scores["branch"] * 40
    ) / 100
    assert data["score"] == round(expected, 1)
    assert (data["grade"], data["vanguard_shortlist"], data["delist_review"]) == (grade, vanguard, delist)
    if delist:
        assert data["delist_decision"] == "摘牌"


def test_a_member_without_peers_is_weighted_without_peer_rating(pledge: Engine) -> None:
    """B2 has one member: no 党员互评 tasks, and the weights DMN moves that weight to masses and branch."""
    (inst,) = start_year(pledge, "B2", YEAR, "sec2", {"member3": "值守责任岗"})
    assert view(pledge, inst).data["peers"] == []
    scores = {"self": 100, "peer": 0, "masses": 80, "branch": 80}
    full_year(pledge, inst, "member3", scores, [], sec="sec2", masses="masses2")
    data = view(pledge, inst).data
    assert data["peer_scores"] == []
    assert (data["w_self"], data["w_peer"], data["w_masses"], data["w_branch"]) == (10, 0, 30, 60)
    assert data["score"] == 82.0 and data["grade"] == "中"
    assert view(pledge, inst).status == "completed"


def test_bulk_start_is_idempotent(pledge: Engine) -> None:
    first = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    assert len(first) == 3  # member1, member2, member4
    assert start_year(pledge, "B1", YEAR, "sec1", POSTS) == []
    with pledge.db.write() as s:
        add_user(s, "member5", "党员戊")
        grant(s, "member5", "B1", "party_member")
    (late_joiner,) = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    assert start_year(pledge, "B1", YEAR, "sec1", POSTS) == []
    with pledge.db.read() as s:
        keys = sorted(
            s.execute(select(Instance.business_key).where(Instance.process_key == PROCESS)).scalars()
        )
    assert keys == [f"pledge:{YEAR}:{u}" for u in ("member1", "member2", "member4", "member5")]
    assert view(pledge, late_joiner).data["peers"] == ["member1", "member2", "member4"]
    assert len(start_year(pledge, "B1", YEAR + 1, "sec1", POSTS)) == 4  # a new year is a new cycle
    with pytest.raises(Forbidden):
        start_year(pledge, "B2", YEAR, "sec1")  # a secretary starts only in their own branch


def test_year_figures_per_branch(pledge: Engine) -> None:
    b1 = start_year(pledge, "B1", YEAR, "sec1", POSTS)
    (b2,) = start_year(pledge, "B2", YEAR, "sec2")
    good = {"self": 100, "peer": 96, "masses": 95, "branch": 95}
    full_year(pledge, b1[0], "member1", good, ["member2", "member4"])
    commit_and_approve(pledge, b1[1], "member2")  # approved, not yet evaluated
    pledge.complete(only_task(pledge, "member4", "ut_commit").id, "member4", {"pledges": PLEDGES[:2]})
    pledge.complete(only_task(pledge, "member3", "ut_commit").id, "member3", {"pledges": PLEDGES[:2]})

    with pledge.db.read() as s:  # the engine's query (engine.reports), the one the dashboard shows
        figures = {code: row.as_dict() for code, row in pledge_year_figures(s, YEAR).items()}
        only_b2 = pledge_year_figures(s, YEAR, org="B2")
    assert figures["B1"] == {
        "cycles": 3,
        "made": 3 + 3 + 2,
        "approved": 3 + 3,
        "kept_on_time": 2,
        "late_reports": 0,
        "grades": Counter({"好": 1}),
    }
    assert figures["B2"]["made"] == 2 and figures["B2"]["approved"] == 0
    assert list(only_b2) == ["B2"] and only_b2["B2"].as_dict() == figures["B2"]
    assert view(pledge, b2).stage == "支部审诺"


def test_demo_pledge_cycles_load_once_at_different_stages(db) -> None:  # type: ignore[no-untyped-def]
    from web import demo, demo_pledge

    engine = Engine(db, script_time_budget=1.0)
    assert demo_pledge.load(engine, {"party_office": "chenjing"}) == []  # nothing deployed yet
    with engine.db.write() as s:
        demo._load_directory(s, demo.DemoReport())
    engine.deploy(pledge_files(), demo.DESIGNER, PROCESS)

    ids = demo_pledge.load(engine, {"party_office": "chenjing"})
    assert len(ids) == 12
    assert demo_pledge.load(engine, {"party_office": "chenjing"}) == []
    with engine.db.read() as s:
        stages = Counter(s.execute(select(Instance.stage).where(Instance.process_key == PROCESS)).scalars())
    assert stages == Counter({"党员承诺": 8, "支部审诺": 1, "监督践诺": 3})
    (published, *_) = ids
    board = view(engine, published).data
    assert board["published"] is True and board["post"] == "党建宣传责任岗" and len(board["pledges"]) == 3
