"""Moving running instances between versions of a process (engine.versions, Engine.migrate)."""

from __future__ import annotations

import re

import pytest
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select

from engine import Engine, Forbidden, InvalidState
from engine.directory import add_user, grant
from engine.models import AuditEvent, Definition, HumanTask, Instance, Job
from engine.versions import diff_versions, dry_run, migrate_all
from tests.helpers import assert_chain_intact, files, later, only_task
from tests.lifecycle_helpers import PROCESS, lifecycle_files
from tests.test_lifecycle import to_practice

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
APPLICATION = {"title": "党员先锋岗建设", "problems": ["参与度低"], "budget": 5000}


def second_look(text: str) -> str:
    """Version 2: a new step '复核' between the review and the decision."""
    text = text.replace(
        '<bpmn:sequenceFlow id="f3" sourceRef="review" targetRef="decide" />',
        '<bpmn:sequenceFlow id="f3" sourceRef="review" targetRef="recheck" />\n'
        '    <bpmn:userTask id="recheck" name="复核" />\n'
        '    <bpmn:sequenceFlow id="f3b" sourceRef="recheck" targetRef="decide" />',
    )
    return text.replace(
        "<bpmn:flowNodeRef>decide</bpmn:flowNodeRef>",
        "<bpmn:flowNodeRef>decide</bpmn:flowNodeRef><bpmn:flowNodeRef>recheck</bpmn:flowNodeRef>",
    )


def without_apply(text: str) -> str:
    """Version 3 (from 2): the application step renamed, so instances waiting in it cannot move."""
    for old, new in (
        ('id="apply"', 'id="apply_v3"'),
        ('Ref="apply"', 'Ref="apply_v3"'),
        (">apply<", ">apply_v3<"),
    ):
        text = text.replace(old, new)
    return text


def deploy_variant(engine: Engine, change) -> Definition:  # type: ignore[no-untyped-def]
    bundle = files(*APPROVAL)
    bundle["approval.bpmn"] = change(bundle["approval.bpmn"].decode()).encode()
    return engine.deploy(bundle, "designer")


@pytest.fixture
def two_running(engine: Engine) -> tuple[int, int]:
    """Version 1 with one instance at 'apply' and one at 'review' (its boundary timer waiting)."""
    engine.deploy(files(*APPROVAL), "designer")
    at_apply = engine.start("approval", "sec1", "B1")
    at_review = engine.start("approval", "sec1", "B1", business_key="second")
    apply = [t for t in only_tasks(engine, at_review.id) if t.task_spec == "apply"][0]
    engine.complete(apply.id, "sec1", APPLICATION)
    return at_apply.id, at_review.id


def five_judges(engine: Engine) -> None:
    with engine.db.write() as s:  # five judges, as tests/test_lifecycle.py's fixture sets up
        for name in ("judge4", "judge5"):
            add_user(s, name, f"评委{name[-1]}")
            grant(s, name, "HQ", "review_committee")


def only_tasks(engine: Engine, instance_id: int) -> list[HumanTask]:
    with engine.db.read() as s:
        return list(
            s.execute(
                select(HumanTask).where(HumanTask.instance_id == instance_id, HumanTask.state == "open")
            ).scalars()
        )


def test_compatible_instance_moves_keeps_its_task_and_timer_and_completes_on_new_version(
    engine: Engine, two_running: tuple[int, int]
) -> None:
    at_apply, at_review = two_running
    engine.claim(only_task(engine, "office", "review").id, "office")
    with engine.db.read() as s:
        timer_before = s.execute(select(Job.due_at).where(Job.instance_id == at_review)).scalar_one()
    v2 = deploy_variant(engine, second_look)
    checks = {c.instance_id: c for c in dry_run(engine, "approval", 1, 2)}
    assert checks[at_apply].can_move and checks[at_review].can_move

    engine.migrate(at_review, "designer", 2)
    with engine.db.read() as s:
        assert s.get(Instance, at_review).definition_id == v2.id
        timer_after = s.execute(
            select(Job.due_at).where(Job.instance_id == at_review, Job.state == "pending")
        ).scalar_one()
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "instance.migrated")).scalar_one()
    assert timer_after == timer_before  # the waiting timer kept its due time
    assert event.instance_id == at_review and event.actor == "designer"
    assert event.payload["from_version"] == 1 and event.payload["to_version"] == 2

    review = only_task(engine, "office", "review")  # the same inbox row, still claimed
    assert review.assignee_id is not None
    engine.complete(review.id, "office", {"verdict": "reject"})
    recheck = [t for t in only_tasks(engine, at_review) if t.task_spec == "recheck"]
    assert recheck, "the step added in version 2 runs"
    engine.complete(recheck[0].id, "office", {})
    with engine.db.read() as s:
        assert s.get(Instance, at_review).status == "completed"
        assert s.get(Instance, at_apply).definition_id != v2.id  # untouched by a single migrate
    assert_chain_intact(engine)


def test_dry_run_gives_reasons_and_migrate_all_moves_only_those_that_can(
    engine: Engine, two_running: tuple[int, int]
) -> None:
    at_apply, at_review = two_running
    deploy_variant(engine, lambda t: without_apply(second_look(t)))
    checks = {c.instance_id: c for c in dry_run(engine, "approval", 1, 2)}
    assert checks[at_review].can_move
    assert not checks[at_apply].can_move
    assert any("apply" in reason and "删除" in reason for reason in checks[at_apply].reasons)

    with pytest.raises(InvalidState, match="apply"):
        engine.migrate(at_apply, "designer", 2)
    results = {r.instance_id: r for r in migrate_all(engine, "approval", 1, 2, "designer")}
    assert results[at_review].moved and not results[at_apply].moved
    # the instance that stayed still works on version 1
    apply = [t for t in only_tasks(engine, at_apply) if t.task_spec == "apply"][0]
    engine.complete(apply.id, "sec1", APPLICATION)
    assert [t.task_spec for t in only_tasks(engine, at_apply)] == ["review"]
    assert_chain_intact(engine)


def test_suspended_instance_is_not_moved_and_only_designers_migrate(
    engine: Engine, two_running: tuple[int, int]
) -> None:
    at_apply, at_review = two_running
    deploy_variant(engine, second_look)
    engine.suspend(at_apply, "office", "暂停")
    checks = {c.instance_id: c for c in dry_run(engine, "approval", 1, 2)}
    assert not checks[at_apply].can_move and "挂起" in checks[at_apply].reasons[0]
    with pytest.raises(Forbidden):
        engine.migrate(at_review, "office", 2)
    with pytest.raises(InvalidState):
        engine.migrate(at_review, "designer", 1)  # already there


def test_diff_lists_added_removed_changed_elements() -> None:
    v1 = {k: v.decode() for k, v in files(*APPROVAL).items()}
    v2 = dict(v1, **{"approval.bpmn": without_apply(second_look(v1["approval.bpmn"]))})
    v2["approval.bpmn"] = v2["approval.bpmn"].replace('name="完整性审核"', 'name="完整性审核(新)"')
    diff = diff_versions(v1, v2)
    added = {(e.id, e.type) for e in diff.added}
    assert {("recheck", "userTask"), ("f3b", "sequenceFlow"), ("apply_v3", "userTask")} <= added
    assert ("apply", "userTask", "填写申报书") in {(e.id, e.type, e.name) for e in diff.removed}
    changed = {e.id for e in diff.changed}
    assert {"review", "f3", "lane_office", "lane_branch"} <= changed
    assert "count" not in changed and "sign" not in changed
    assert diff_versions(v1, v1).empty


def _work_items(engine: Engine, inst_id: int) -> list[tuple[str, int | None, str]]:
    return sorted((t.task_spec, t.assignee_id, t.task_guid) for t in only_tasks(engine, inst_id))


def _in_practice_on_v1(
    engine: Engine,
) -> tuple[int, list[tuple[str, int | None, str]], dict[str, bytes], str]:
    """A v1 lifecycle project in practice, its work items, and v1's files with the diagram as text to edit."""
    five_judges(engine)
    engine.deploy(lifecycle_files(), "designer", PROCESS)
    inst_id = to_practice(engine)
    changed = lifecycle_files()
    return inst_id, _work_items(engine, inst_id), changed, changed["project_lifecycle.bpmn"].decode()


def test_lifecycle_in_practice_moves_to_a_version_with_renamed_later_step(engine: Engine) -> None:
    """The real lifecycle: stages are expanded sub-processes, practice is a multi-instance task."""
    inst_id, before, changed, bpmn = _in_practice_on_v1(engine)
    changed["project_lifecycle.bpmn"] = bpmn.replace(
        'name="阶段进展汇报"', 'name="阶段进展汇报(新)"'
    ).encode()
    engine.deploy(changed, "designer", PROCESS)
    checks = dry_run(engine, PROCESS, 1, 2)
    assert [c.can_move for c in checks] == [True], checks
    engine.migrate(inst_id, "designer", 2)
    after = _work_items(engine, inst_id)
    assert after == before and {spec for spec, _, _ in after} == {"practice"}  # same work items, same people
    for member in ("member1", "member2"):
        engine.complete(only_task(engine, member, "practice").id, member, {"progress": {"summary": "完成"}})
    assert engine.run_due_jobs(later(31)) == 1  # the round timer, kept across the move
    assert only_task(engine, "sec1", "round_report").title == "阶段进展汇报(新)"  # version 2's step
    assert_chain_intact(engine)


def test_lifecycle_moves_when_stages_ahead_of_the_running_ones_are_renamed_or_removed(engine: Engine) -> None:
    """Acceptance lies ahead of the running practice and control stages: it is only predicted in the
    saved state, so the move drops that prediction and predicts again from version 2."""
    inst_id, before, changed, bpmn = _in_practice_on_v1(engine)
    bpmn = bpmn.replace('"stage_acceptance"', '"stage_review_v2"')
    bpmn = re.sub(r'<bpmn:subProcess id="stage_promotion".*?\n    </bpmn:subProcess>', "", bpmn, flags=re.S)
    bpmn = bpmn.replace('targetRef="stage_promotion"', 'targetRef="end"')
    changed["project_lifecycle.bpmn"] = re.sub(r'<bpmn:sequenceFlow id="m_f10"[^>]*/>', "", bpmn).encode()
    v2 = engine.deploy(changed, "designer", PROCESS)
    (check,) = dry_run(engine, PROCESS, 1, 2)
    assert check.can_move, check
    engine.migrate(inst_id, "designer", 2)
    after = _work_items(engine, inst_id)
    assert after == before  # the running stages' work items are untouched
    with engine.db.read() as s:
        row = s.get(Instance, inst_id)
        assert row is not None and row.definition_id == v2.id
        target = engine.compiled(v2)
        workflow = engine.serializer.loads(
            row.state, target.specs[PROCESS], target.subprocess_specs(), engine.script_engine
        )
    ahead = {t.task_spec.name for t in workflow.get_tasks(state=TaskState.FUTURE | TaskState.PREDICTED_MASK)}
    assert "stage_review_v2" in ahead and "stage_acceptance" not in ahead and "stage_promotion" not in ahead
    assert_chain_intact(engine)


def test_lifecycle_refused_when_a_running_stage_was_renamed(engine: Engine) -> None:
    """Dynamic control runs beside practice: renaming it is refused, not corrupted."""
    five_judges(engine)
    engine.deploy(lifecycle_files(), "designer", PROCESS)
    inst_id = to_practice(engine)
    changed = lifecycle_files()
    bpmn = changed["project_lifecycle.bpmn"].decode()
    changed["project_lifecycle.bpmn"] = bpmn.replace('"stage_control"', '"stage_control_v2"').encode()
    engine.deploy(changed, "designer", PROCESS)
    (check,) = dry_run(engine, PROCESS, 1, 2)
    assert not check.can_move and "stage_control" in check.reasons[0], check
    with pytest.raises(InvalidState, match="stage_control"):
        engine.migrate(inst_id, "designer", 2)
    assert {t.task_spec for t in only_tasks(engine, inst_id)} == {"practice"}  # still working on v1
