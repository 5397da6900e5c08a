"""Each BPMN construct driven to its end through the engine API, as the users its lanes name."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine import Engine, Forbidden, InvalidState, ValidationFailed
from engine.models import Instance, Job
from engine.queries import instance_view
from tests.helpers import actions, assert_chain_intact, files, inbox_of, later, only_task

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
SCORING = ("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json")
APPLICATION = {"title": "党员先锋岗建设", "problems": ["青年党员参与度低", "活动形式单一"], "budget": 5000}


def view(engine: Engine, instance_id: int):  # type: ignore[no-untyped-def]
    with engine.db.read() as s:
        return instance_view(s, instance_id)


def test_lanes_gateway_loop_script_and_timer(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")

    # branch_secretary resolves in the instance's branch: sec1 sees it, sec2 does not.
    apply = only_task(engine, "sec1", "apply")
    assert inbox_of(engine, "sec2") == []
    assert apply.due_at is not None and apply.stage is None

    engine.complete(apply.id, "sec1", APPLICATION)
    # party_office walks up the tree from B1 to HQ.
    review = only_task(engine, "office", "review")
    assert review.priority == 2
    engine.complete(review.id, "office", {"verdict": "return", "comment": "请补充预算明细"})

    again = only_task(engine, "sec1", "apply")
    assert view(engine, inst.id).data["comment"] == "请补充预算明细"
    engine.complete(again.id, "sec1", {**APPLICATION, "budget": 8000})
    engine.complete(only_task(engine, "office", "review").id, "office", {"verdict": "approve"})

    state = view(engine, inst.id)
    assert state.data["summary"] == "党员先锋岗建设: 2 个问题"
    assert state.open_tasks == []
    with engine.db.read() as s:
        (job,) = s.execute(select(Job).where(Job.instance_id == inst.id, Job.state == "pending")).scalars()
    assert engine.run_due_jobs(later(1)) == 0  # not due yet: the intermediate timer waits 5 days
    assert engine.run_due_jobs(later(6)) == 1

    sign = only_task(engine, "secretary", "sign")
    engine.complete(sign.id, "secretary", {})
    assert view(engine, inst.id).status == "completed"
    assert_chain_intact(engine)
    assert actions(engine, inst.id)[-3:] == ["task.completed", "engine.steps", "instance.completed"]


def test_boundary_timer_interrupts_the_task_it_guards(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    engine.complete(only_task(engine, "sec1").id, "sec1", APPLICATION)
    review = only_task(engine, "office", "review")

    assert engine.run_due_jobs(later(4)) == 1
    escalate = only_task(engine, "office", "escalate")
    with pytest.raises(InvalidState):
        engine.complete(review.id, "office", {"verdict": "approve"})
    engine.complete(escalate.id, "office", {"verdict": "reject", "comment": "逾期"})
    assert view(engine, inst.id).status == "completed"
    assert "task.cancelled" in actions(engine, inst.id)
    assert_chain_intact(engine)


def test_multi_instance_parallel_dmn_call_activity_and_message(engine: Engine) -> None:
    engine.deploy(files(*SCORING), "designer")
    inst = engine.start("scoring", "office", "HQ", {"judges": ["judge1", "judge2", "judge3"]})

    # each judge sees only their own sheet; the parallel branch is the office's
    sheets = {name: only_task(engine, name, "score") for name in ("judge1", "judge2", "judge3")}
    assert len({t.id for t in sheets.values()}) == 3
    assert sheets["judge2"].title == "评委打分 · judge2"
    with pytest.raises(Forbidden):
        engine.complete(sheets["judge1"].id, "judge2", {"points": 99})
    for name, points in zip(sheets, (90, 80, 85), strict=True):
        engine.complete(sheets[name].id, name, {"points": points})
    engine.complete(only_task(engine, "office", "prepare").id, "office", {})

    # the call activity's user task has no lane: it goes to the initiator
    state = view(engine, inst.id)
    assert state.data["score"] == 85.0 and state.data["decision"] == "立项"
    engine.complete(only_task(engine, "office", "n_ack").id, "office", {})
    assert view(engine, inst.id).status == "running"

    assert engine.send_message("budget_allocated", {"amount": 5000}) == [inst.id]
    final = view(engine, inst.id)
    assert final.status == "completed"
    assert final.data["allocation"] == {"amount": 5000} and final.data["notified"] == "立项"
    assert engine.send_message("budget_allocated", {"amount": 1}) == []
    assert_chain_intact(engine)


def test_long_loop_keeps_its_state_small_and_its_tasks_visible(engine: Engine) -> None:
    """350 rounds: past depth 1000 SpiffWorkflow stops seeing tasks unless history is compacted."""
    engine.deploy(files("loop.bpmn", "report.json"), "designer")
    inst = engine.start("loop", "member1", "B1", {"reports": 0})
    sizes = {}
    rounds = 350
    for i in range(rounds):
        task = only_task(engine, "member1", "report")
        engine.complete(task.id, "member1", {"progress": f"第{i + 1}轮", "done": i == rounds - 1})
        if i in (20, rounds - 2):
            with engine.db.read() as s:
                sizes[i] = len(s.get(Instance, inst.id).state)
    state = view(engine, inst.id)
    assert state.status == "completed" and state.data["reports"] == rounds
    assert sizes[rounds - 2] < 2 * sizes[20]
    assert actions(engine, inst.id).count("task.completed") == rounds
    assert_chain_intact(engine)


def test_form_errors_are_per_field_and_change_nothing(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    task = only_task(engine, "sec1")
    before = actions(engine)
    with pytest.raises(ValidationFailed) as err:
        engine.complete(task.id, "sec1", {"title": "x", "problems": [], "hack": 1})
    assert set(err.value.fields) == {"title", "problems", "hack"}
    assert err.value.fields["hack"] == ["unknown field"]
    assert actions(engine) == before
    with engine.db.read() as s:
        assert s.get(Instance, inst.id).revision == inst.revision


def test_wrong_user_double_completion_and_stale_revision(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    task = only_task(engine, "sec1")
    with pytest.raises(Forbidden):
        engine.complete(task.id, "sec2", APPLICATION)
    with pytest.raises(Forbidden):
        engine.complete(task.id, "outsider", APPLICATION)
    stale = inst.revision
    engine.complete(task.id, "sec1", APPLICATION)
    with pytest.raises(InvalidState, match="already completed by 一支部书记"):
        engine.complete(task.id, "sec1", APPLICATION)
    review = only_task(engine, "office")
    from engine import Conflict

    with pytest.raises(Conflict, match="reload"):
        engine.complete(review.id, "office", {"verdict": "approve"}, expected_revision=stale)


def test_claim_and_unclaim(engine: Engine) -> None:
    engine.deploy(files(*SCORING), "designer")
    engine.start("scoring", "office", "HQ", {"judges": ["judge1"]})
    prepare = only_task(engine, "office", "prepare")
    with pytest.raises(Forbidden):
        engine.claim(prepare.id, "judge1")
    engine.claim(prepare.id, "office")
    with pytest.raises(Forbidden):
        engine.unclaim(prepare.id, "judge1")
    engine.unclaim(prepare.id, "office")
    assert [a for a in actions(engine) if a.startswith("task.") and "claim" in a] == [
        "task.claimed",
        "task.unclaimed",
    ]


def test_read_models_respect_who_may_see_an_instance(engine: Engine) -> None:
    from engine import Forbidden as Denied

    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1", {"title": "可见性"})
    assert [t.task_spec for t in engine.inbox("sec1")] == ["apply"]
    assert engine.instance(inst.id, viewer="secretary").title == "可见性"  # committee oversees B1
    assert engine.instance(inst.id, viewer="member1").status == "running"  # a member of B1
    with pytest.raises(Denied):
        engine.instance(inst.id, viewer="sec2")  # another branch
    with pytest.raises(Denied):
        engine.instance(inst.id, viewer="outsider")
