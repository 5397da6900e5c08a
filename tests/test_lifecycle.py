"""The six-step project lifecycle (党建项目化管理), end to end through the engine as the right people.

Deploys the real files: workflows/project_lifecycle.bpmn, workflows/lifecycle_*.dmn, forms/lifecycle_*.json.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from engine import Engine, Forbidden, ValidationFailed
from engine.directory import add_user, grant
from engine.models import AuditEvent, HumanTask, Job
from engine.queries import instance_view
from tests.helpers import actions, assert_chain_intact, inbox_of, later, only_task
from tests.lifecycle_helpers import (
    PROCESS,
    lifecycle_files,
)

JUDGES = ["judge1", "judge2", "judge3", "judge4", "judge5"]
TODAY = date.today()
STAGES = ["计划立项", "任务分解", "调研实践", "动态管控", "考评验收", "总结推广"]


def application(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "title": "平安“365”安全管控机制",
        "project_type": "创新探索型",
        "problems": ["青年职工安全意识薄弱", "班组学习形式单一"],
        "goals": "全年零违章,青年职工安全培训全覆盖",
        "measures": "党员安全责任区、每日安全讲评、季度技能比武",
        "milestones": ["3月完成方案", "9月中期评估"],
        "budget": 20000,
        "period_start": TODAY.isoformat(),
        "period_end": (TODAY + timedelta(days=300)).isoformat(),
    }
    data.update(over)
    return data


def sheet(points: int) -> dict[str, object]:
    """A score sheet totalling ``points`` (spread over the four criteria, each at most 25)."""
    parts = [min(25, max(0, points - 25 * i)) for i in range(4)]
    keys = ["plan_quality", "track_record", "credibility", "capability"]
    return {"score_sheet": dict(zip(keys, parts, strict=True)), "comment": "认真评审"}


@pytest.fixture
def lifecycle(engine: Engine) -> Engine:
    with engine.db.write() as s:
        for name in ("judge4", "judge5"):
            add_user(s, name, f"评委{name[-1]}")
            grant(s, name, "HQ", "review_committee")
    engine.deploy(lifecycle_files(), "designer", PROCESS)
    return engine


def view(engine: Engine, instance_id: int):  # type: ignore[no-untyped-def]
    with engine.db.read() as s:
        return instance_view(s, instance_id)


def do(engine: Engine, user: str, spec: str, data: dict[str, object] | None = None) -> HumanTask:
    task = only_task(engine, user, spec)
    engine.complete(task.id, user, data or {})
    return task


def initiate(engine: Engine, scores: list[int], judges: list[str] = JUDGES, **app: object) -> int:
    inst = engine.start(PROCESS, "sec1", "B1", {"title": "平安“365”安全管控机制"})
    do(engine, "sec1", "apply", application(**app))
    do(engine, "office", "check", {"verdict": "approve"})
    do(engine, "office", "convene", {"meeting_date": TODAY.isoformat(), "judges": judges})
    for judge, points in zip(judges, scores, strict=True):
        do(engine, judge, "score", sheet(points))
    return inst.id


def sign(engine: Engine) -> None:
    do(engine, "secretary", "sign_committee", {"signed": True, "signed_on": TODAY.isoformat()})
    do(engine, "sec1", "sign_branch", {"signed": True, "signed_on": TODAY.isoformat()})


WORK_ITEMS = [
    {
        "owner": "member1",
        "deliverable": "安全责任区划分方案",
        "due_date": (TODAY - timedelta(days=1)).isoformat(),
    },
    {
        "owner": "member2",
        "deliverable": "青年职工培训记录",
        "due_date": (TODAY + timedelta(days=60)).isoformat(),
    },
]


def to_practice(engine: Engine) -> int:
    inst_id = initiate(engine, [90, 85, 88, 80, 95])
    sign(engine)
    do(engine, "sec1", "decompose", {"work_items": WORK_ITEMS})
    do(engine, "office", "plan_review", {"plan_verdict": "approve"})
    return inst_id


def test_return_for_revision_loops_back_with_comments_repeatedly(lifecycle: Engine) -> None:
    engine = lifecycle
    inst = engine.start(PROCESS, "sec1", "B1")
    assert view(engine, inst.id).stage == "计划立项"
    apply = only_task(engine, "sec1", "apply")
    assert apply.stage == "计划立项" and apply.due_at is not None
    assert inbox_of(engine, "sec2") == []  # the lane resolves in B1 only
    with pytest.raises(ValidationFailed) as err:  # at least one problem; the type is an enum
        engine.complete(apply.id, "sec1", application(problems=[], project_type="其他"))
    assert set(err.value.fields) == {"problems", "project_type"}
    engine.complete(apply.id, "sec1", application())
    with pytest.raises(ValidationFailed):  # a return needs comments
        do(engine, "office", "check", {"verdict": "return"})
    for round_, comment in enumerate(["请补充经费明细", "阶段节点不具体"], start=1):
        do(engine, "office", "check", {"verdict": "return", "comments": comment})
        again = only_task(engine, "sec1", "apply")
        assert engine.instance(inst.id).data["comments"] == comment
        engine.complete(again.id, "sec1", application(budget=20000 + round_))
    do(engine, "office", "check", {"verdict": "approve"})
    assert only_task(engine, "office", "convene").stage == "计划立项"
    assert engine.instance(inst.id).data["budget"] == 20002


def test_judges_score_alone_extremes_dropped_and_the_table_decides(lifecycle: Engine) -> None:
    engine = lifecycle
    inst = engine.start(PROCESS, "sec1", "B1")
    do(engine, "sec1", "apply", application())
    do(engine, "office", "check", {"verdict": "approve"})
    do(engine, "office", "convene", {"meeting_date": TODAY.isoformat(), "judges": JUDGES})
    sheets = {j: only_task(engine, j, "score") for j in JUDGES}
    assert len({t.id for t in sheets.values()}) == 5 and sheets["judge2"].title == "评委独立打分 · judge2"
    assert all(t.assignment == "owner" for t in sheets.values())
    with pytest.raises(Forbidden):  # a judge cannot fill in another judge's sheet
        engine.complete(sheets["judge1"].id, "judge2", sheet(80))
    with pytest.raises(ValidationFailed):  # each criterion is 0–25
        engine.complete(
            sheets["judge1"].id, "judge1", {"score_sheet": {**sheet(80)["score_sheet"], "credibility": 30}}
        )
    for judge, points in zip(JUDGES, [100, 82, 78, 80, 20], strict=True):
        engine.complete(sheets[judge].id, judge, sheet(points))
    data = engine.instance(inst.id).data
    # 100 and 20 dropped: (82 + 78 + 80) / 3 = 80 → 立项 (a plain average, 72, would not be)
    assert data["initiation_totals"] == [20, 78, 80, 82, 100]
    assert data["initiation_score"] == 80 and data["initiation_decision"] == "立项"
    # approved → the committee secretary and the branch secretary sign in parallel
    committee, branch = (
        only_task(engine, "secretary", "sign_committee"),
        only_task(engine, "sec1", "sign_branch"),
    )
    engine.complete(branch.id, "sec1", {"signed": True, "signed_on": TODAY.isoformat()})
    assert view(engine, inst.id).stage == "计划立项"  # still waiting for the committee's signature
    engine.complete(committee.id, "secretary", {"signed": True, "signed_on": TODAY.isoformat()})
    assert view(engine, inst.id).stage == "任务分解"
    signed = engine.instance(inst.id).data
    assert signed["contract_committee_signed_on"] == signed["contract_branch_signed_on"]


def test_three_judges_revise_then_reject_records_the_reason(lifecycle: Engine) -> None:
    engine = lifecycle
    inst_id = initiate(engine, [70, 65, 60], judges=["judge1", "judge2", "judge3"])
    assert engine.instance(inst_id).data["initiation_decision"] == "修改后再审"
    do(engine, "sec1", "apply", application(measures="补充了具体措施"))  # back to the branch
    do(engine, "office", "check", {"verdict": "approve"})
    do(
        engine,
        "office",
        "convene",
        {"meeting_date": TODAY.isoformat(), "judges": ["judge1", "judge2"] + ["judge3"]},
    )
    for judge, points in zip(["judge1", "judge2", "judge3"], [50, 55, 60], strict=True):
        do(engine, judge, "score", sheet(points))
    state = view(engine, inst_id)
    assert state.status == "completed" and state.data["outcome"] == "不予立项"
    assert state.data["initiation_score"] == 55
    assert state.data["rejection_reason"] == "综合得分 55.0:综合得分低于60分,不予立项"
    assert inbox_of(engine, "secretary") == []


def test_decomposition_practice_control_acceptance_promotion(lifecycle: Engine) -> None:
    engine = lifecycle
    inst_id = to_practice(engine)

    # (4) one practice task per item, owned by the named member, due on the given date
    t1, t2 = only_task(engine, "member1", "practice"), only_task(engine, "member2", "practice")
    assert (t1.stage, t1.assignment) == ("调研实践", "owner")
    assert t1.due_at.date().isoformat() == WORK_ITEMS[0]["due_date"]
    assert t2.due_at.date().isoformat() == WORK_ITEMS[1]["due_date"]
    assert inbox_of(engine, "member3") == []
    with engine.db.read() as s:  # a reminder job a day before each practice task is due
        reminders = {
            j.task_guid: j.due_at
            for j in s.execute(
                select(Job).where(Job.instance_id == inst_id, Job.kind == "reminder")
            ).scalars()
        }
    # member1's item is overdue from the start (the late item below): no reminder can come ahead of it
    assert t1.due_at - timedelta(days=1) < later(0)
    assert reminders == {t2.task_guid: t2.due_at - timedelta(days=1)}
    engine.complete(
        t2.id, "member2", {"progress": {"summary": "完成两期培训", "evidence": ["files/培训签到表.pdf"]}}
    )

    # (5) dynamic control: nothing before the period; the round finds the overdue item → 预警
    assert engine.run_due_jobs(later(10)) == 0
    assert engine.run_due_jobs(later(31)) == 1
    assert view(engine, inst_id).stage in ("动态管控", "调研实践")
    do(
        engine,
        "sec1",
        "round_report",
        {"round_summary": "培训已完成", "finished_items": ["青年职工培训记录"]},
    )
    assert engine.instance(inst_id).data["late_items"] == [
        f"安全责任区划分方案(member1,{WORK_ITEMS[0]['due_date']})"
    ]
    do(engine, "office", "supervise", {"supervision_status": "warning", "notice": "责任区方案已逾期"})
    warning = only_task(engine, "sec1", "warning")
    assert (warning.title, warning.stage, warning.priority) == ("逾期预警处理", "动态管控", 2)
    engine.complete(warning.id, "sec1", {"warning_measures": "本周内完成"})

    # second round: 督办 needs the branch's rectification before the loop moves on
    assert engine.run_due_jobs(later(62)) == 1
    do(engine, "sec1", "round_report", {"round_summary": "仍在推进"})
    with pytest.raises(ValidationFailed):  # a 督办 without its notice text is refused
        do(engine, "office", "supervise", {"supervision_status": "督办"})
    do(engine, "office", "supervise", {"supervision_status": "督办", "notice": "限期十日完成责任区方案"})
    rounds = actions(engine, inst_id).count("timer.fired")
    engine.run_due_jobs(later(200))  # a reminder is due by now (the rectification task), but no round
    assert actions(engine, inst_id).count("timer.fired") == rounds  # no round while rectification is open
    assert actions(engine, inst_id).count("task.reminder") == 1
    do(engine, "sec1", "rectify", {"rectification_response": "已完成", "rectified_on": TODAY.isoformat()})

    # third round: the branch reports completion and the loop ends
    engine.complete(t1.id, "member1", {"progress": {"summary": "方案已印发"}})
    assert engine.run_due_jobs(later(93)) == 1
    do(
        engine,
        "sec1",
        "round_report",
        {
            "round_summary": "全部完成",
            "finished_items": ["安全责任区划分方案", "青年职工培训记录"],
            "project_completed": True,
        },
    )
    assert engine.instance(inst_id).data["late_items"] == []
    do(engine, "office", "supervise", {"supervision_status": "on_time"})

    # (6) acceptance: weights by type from the table; first 不合格 → one rectification round
    summary = only_task(engine, "sec1", "summary")
    assert summary.stage == "考评验收"
    engine.complete(
        summary.id,
        "sec1",
        {
            "summary": "总结",
            "self_score": 92,
            "problems_solved": ["青年职工安全意识薄弱", "班组学习形式单一"],
        },
    )
    do(engine, "judge3", "onsite", {"onsite_score": 60})
    do(engine, "office", "survey", {"questionnaire_score": 70, "democratic_score": 70})
    data = engine.instance(inst_id).data
    assert (data["w_onsite"], data["w_questionnaire"], data["w_democratic"]) == (0.5, 0.2, 0.3)
    assert data["acceptance_score"] == 65.0 and data["acceptance_grade"] == "不合格"
    do(
        engine,
        "sec1",
        "acc_rectify",
        {"rectification_response": "补充台账", "rectified_on": TODAY.isoformat()},
    )
    do(engine, "judge1", "onsite", {"onsite_score": 95})
    do(engine, "office", "survey", {"questionnaire_score": 90, "democratic_score": 85})
    data = engine.instance(inst_id).data
    assert data["acceptance_score"] == 91.0 and data["acceptance_grade"] == "优秀"

    # (7) promotion records outcomes, and the project closes
    promote = only_task(engine, "office", "promote")
    assert promote.stage == "总结推广"
    engine.complete(
        promote.id,
        "office",
        {
            "theory_outcomes": ["《安全管控机制研究》"],
            "institution_outcomes": ["平安365管控制度"],
            "brand_name": "平安365",
            "recommended_excellent": True,
        },
    )
    final = view(engine, inst_id)
    assert final.status == "completed" and final.data["outcome"] == "结项"
    assert final.data["brand_name"] == "平安365" and final.data["recommended_excellent"] is True

    # (8) yearly compliance per organisation: projects run and problems solved
    report = engine.yearly_compliance(TODAY.year)
    assert (report["B1"].projects, report["B1"].problems_solved, report["B1"].compliant) == (1, 2, True)
    assert not report["B2"].compliant  # no project at all: listed, and falling short on both counts
    assert report["B2"].shortfalls == ["党建项目 0 个，少于 1 个", "解决新问题 0 个，少于 2 个"]

    # (9) the audit trail has who did what with which data
    with engine.db.read() as s:
        events = list(
            s.execute(
                select(AuditEvent).where(AuditEvent.instance_id == inst_id).order_by(AuditEvent.seq)
            ).scalars()
        )
    completed = [e for e in events if e.action == "task.completed"]
    by_title = {e.payload["title"]: e for e in completed}
    assert by_title["动态管控检查"].actor == "office"
    notices = [e.payload["data"].get("notice") for e in completed if e.payload["title"] == "动态管控检查"]
    assert "限期十日完成责任区方案" in notices
    assert by_title["督办整改回复"].actor == "sec1"
    assert by_title["登记成果与推广"].payload["data"]["brand_name"] == "平安365"
    assert any(e.action == "timer.fired" and e.actor == "system" for e in events)
    assert_chain_intact(engine)


def test_second_fail_at_acceptance_fails_the_project(lifecycle: Engine) -> None:
    engine = lifecycle
    inst_id = to_practice(engine)
    for member in ("member1", "member2"):
        do(engine, member, "practice", {"progress": {"summary": "完成"}})
    assert engine.run_due_jobs(later(31)) == 1
    do(
        engine,
        "sec1",
        "round_report",
        {
            "round_summary": "完成",
            "project_completed": True,
            "finished_items": [w["deliverable"] for w in WORK_ITEMS],
        },
    )
    do(engine, "office", "supervise", {"supervision_status": "on_time"})
    do(
        engine,
        "sec1",
        "summary",
        {"summary": "总结", "self_score": 80, "problems_solved": ["班组学习形式单一"]},
    )
    for _ in range(2):
        do(engine, "judge2", "onsite", {"onsite_score": 50})
        do(engine, "office", "survey", {"questionnaire_score": 60, "democratic_score": 60})
        if view(engine, inst_id).status == "running":
            do(
                engine,
                "sec1",
                "acc_rectify",
                {"rectification_response": "整改", "rectified_on": TODAY.isoformat()},
            )
    final = view(engine, inst_id)
    assert final.status == "completed" and final.data["outcome"] == "验收不合格"
    assert final.data["acceptance_grade"] == "不合格" and "整改后验收仍不合格" in final.data["failure_reason"]
    assert inbox_of(engine, "office") == [] and inbox_of(engine, "sec1") == []
    failed = engine.yearly_compliance(TODAY.year)["B1"]
    assert failed.problems_solved == 1 and failed.shortfalls == ["解决新问题 1 个，少于 2 个"]


def test_dynamic_control_ends_when_the_project_period_is_over(lifecycle: Engine) -> None:
    """No completion report needed: a round held after the period's last day ends the control loop.

    The engine's clock is injectable, so a second engine over the same database plays "a year later";
    the round's scripts and the loop's condition see that moment (engine.sandbox.script_clock).
    """
    engine = lifecycle
    inst_id = to_practice(engine)
    for member in ("member1", "member2"):
        engine.complete(only_task(engine, member, "practice").id, member, {"progress": {"summary": "已完成"}})
    period_end = date.fromisoformat(engine.instance(inst_id).data["period_end"])
    moment = later((period_end - TODAY).days + 2)
    year_later = Engine(engine.db, clock=lambda: moment)

    year_later.run_due_jobs(moment)
    do(year_later, "sec1", "round_report", {"round_summary": "按计划推进"})  # no completion reported
    do(year_later, "office", "supervise", {"supervision_status": "on_time"})
    assert only_task(year_later, "sec1", "summary").stage == "考评验收"

