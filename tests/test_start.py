"""Starting work: who may, and idempotent starts by business key (one pledge cycle per member a year)."""

from __future__ import annotations

import pytest

from engine import Engine, Forbidden
from engine.directory import add_user, grant
from tests.helpers import files

LOOP = ("loop.bpmn", "report.json")


def test_only_people_of_the_organisation_or_above_may_start_there(engine: Engine) -> None:
    engine.deploy(files(*LOOP), "designer")
    engine.start("loop", "sec1", "B1", {"reports": 0})
    engine.start("loop", "office", "B1", {"reports": 0})  # the office oversees every branch
    with pytest.raises(Forbidden):
        engine.start("loop", "sec2", "B1", {"reports": 0})
    with pytest.raises(Forbidden):
        engine.start("loop", "outsider", "B1", {"reports": 0})


def test_bulk_start_for_a_branch_is_idempotent(engine: Engine) -> None:
    engine.deploy(files(*LOOP), "designer")
    first = engine.start_for_members("loop", "sec1", "B1", "pledge:2026", {"reports": 0, "year": 2026})
    assert [(u, created) for u, _, created in first] == [("member1", True), ("member2", True)]
    assert first[0][1].data["member"] == "member1" and first[0][1].business_key == "pledge:2026:member1"

    with engine.db.write() as s:
        add_user(s, "member4", "党员丁")
        grant(s, "member4", "B1", "party_member")
    again = engine.start_for_members("loop", "sec1", "B1", "pledge:2026", {"reports": 0, "year": 2026})
    assert [(u, created) for u, _, created in again] == [
        ("member1", False),
        ("member2", False),
        ("member4", True),
    ]
    assert again[0][1].id == first[0][1].id
    assert len(engine.inbox("sec1")) == 3  # one task per member started, none twice (no lane: the starter)
