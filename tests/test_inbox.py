"""The inbox: what each person sees, claimed tasks, filters and keyset paging."""

from __future__ import annotations

from engine import Engine
from engine.queries import InboxFilter
from tests.helpers import files, later, only_task

SCORING = ("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json")
APPROVAL = ("approval.bpmn", "apply.json", "review.json")


def test_a_claimed_task_leaves_the_other_candidates_inboxes(engine: Engine) -> None:
    engine.deploy(files(*SCORING), "designer")
    from engine.directory import grant

    with engine.db.write() as s:
        grant(s, "judge3", "HQ", "party_office")  # a second person in the office
    engine.start("scoring", "judge1", "HQ", {"judges": ["judge1"]})
    prepare = only_task(engine, "office", "prepare")
    assert prepare.id in [t.id for t in engine.inbox("judge3")]
    engine.claim(prepare.id, "office")
    assert prepare.id not in [t.id for t in engine.inbox("judge3")]
    assert [t.id for t in engine.inbox("office", InboxFilter(mine_only=True))] == [prepare.id]


def test_filters_and_keyset_paging(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    engine.deploy(files(*SCORING), "designer")
    for _ in range(5):
        engine.start("approval", "sec1", "B1")
    engine.start("scoring", "office", "HQ", {"judges": ["judge1"]})  # sec1 gets nothing from this

    everything = engine.inbox("sec1")
    assert len(everything) == 5 and all(t.process_key == "approval" for t in everything)
    first = engine.inbox("sec1", InboxFilter(limit=2))
    rest = engine.inbox("sec1", InboxFilter(limit=10, after_id=first[-1].id))
    assert [t.id for t in first + rest] == [t.id for t in everything]
    assert engine.inbox("sec1", InboxFilter(process="scoring")) == []
    assert len(engine.inbox("sec1", InboxFilter(overdue_at=later(8)))) == 5  # due in 7 days
    assert engine.inbox("sec1", InboxFilter(overdue_at=later(6))) == []
