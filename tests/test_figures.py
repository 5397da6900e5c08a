"""Dashboard figures on a small known data set, every number counted by hand (tests/dashboard_data.py)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from engine import Engine, Forbidden, InvalidState, NotFound, ValidationFailed, excellence, figures, reports
from engine.directory import user_by_name
from engine.models import AuditEvent, Instance
from tests.dashboard_data import NOW, YEAR, Known, load_known
from tests.helpers import assert_chain_intact


@pytest.fixture
def known(engine: Engine) -> Known:
    return load_known(engine.db)


def scope_of(engine: Engine, username: str) -> figures.Scope:
    with engine.db.read() as s:
        return figures.dashboard_scope(s, user_by_name(s, username).id)


def test_projects_by_stage_count_running_by_stage_and_those_ended_in_the_beijing_year(
    engine: Engine, known: Known
) -> None:
    with engine.db.read() as s:
        this = {code: row.by_stage for code, row in figures.projects_by_stage(s, YEAR).items()}
        last = {code: row.by_stage for code, row in figures.projects_by_stage(s, YEAR - 1).items()}
        columns = figures.stage_columns(figures.projects_by_stage(s, YEAR).values())
    assert this == {
        "B1": {"调研实践": 1, "已结束": 4},  # P3 ended at 00:30 on 1 January Beijing time
        "B2": {"计划立项": 1, "异常": 1, "已结束": 1},
        "B1G1": {"任务分解": 1},
    }
    assert last == {
        "B1": {"调研实践": 1},
        "B2": {"计划立项": 1, "异常": 1, "已结束": 1},
        "B1G1": {"任务分解": 1},
    }
    assert columns == [*figures.LIFECYCLE_STAGES, "异常", "已结束"]


def test_overdue_tasks_are_open_tasks_past_due_per_organisation_and_process(
    engine: Engine, known: Known
) -> None:
    with engine.db.read() as s:
        rows = figures.overdue_tasks(s, NOW)
        behind = figures.overdue_behind(s, NOW, known.org["B1"], None)
        only_pledges = figures.overdue_behind(s, NOW, known.org["B1"], "pledge_cycle")
    assert {code: (r.by_process, r.total) for code, r in rows.items()} == {
        "B1": ({"project_lifecycle": 1, "pledge_cycle": 1}, 2),
        "B2": ({"project_lifecycle": 1}, 1),
    }
    assert list(rows) == ["B1", "B2"]  # most overdue first
    assert rows["B1"].oldest_due == NOW - timedelta(days=2)  # T1's; an aware datetime on every backend
    assert [r.task_id for r in behind] == [known.tasks["T1"], known.tasks["T5"]]  # oldest first
    assert [r.task_id for r in only_pledges] == [known.tasks["T5"]]


def test_compliance_lists_every_grassroots_organisation_with_its_shortfalls(
    engine: Engine, known: Known
) -> None:
    with engine.db.read() as s:
        report = reports.yearly_compliance(s, YEAR)
        earlier = reports.yearly_compliance(s, YEAR - 1)
        behind = reports.compliance_behind(s, YEAR, known.org["B1"])
    counted = {code: (r.projects, r.problems_solved, r.compliant) for code, r in report.items()}
    assert counted == {"B1": (4, 3, True), "B2": (1, 0, False), "B3": (0, 0, False), "B1G1": (1, 1, False)}
    assert report["B2"].shortfalls == ["解决新问题 0 个，少于 2 个"]
    assert report["B3"].shortfalls == ["党建项目 0 个，少于 1 个", "解决新问题 0 个，少于 2 个"]
    assert (earlier["B2"].projects, earlier["B2"].problems_solved) == (1, 1)
    assert sorted(r.instance_id for r in behind) == sorted(known.ids[n] for n in ("P1", "P2", "P8", "P9"))


def test_pledge_figures_per_branch(engine: Engine, known: Known) -> None:
    with engine.db.read() as s:
        rows = {code: r.as_dict() for code, r in reports.pledge_year_figures(s, YEAR).items()}
        b1_only = reports.pledge_year_figures(s, YEAR, org="B1")
        by_id = reports.pledge_year_figures(s, YEAR, org=known.org["B2"])
        kept = reports.pledges_behind(s, YEAR, known.org["B1"], "kept_on_time")
        good = reports.pledges_behind(s, YEAR, known.org["B1"], "grade:好")
        approved = reports.pledges_behind(s, YEAR, known.org["B1"], "approved")
        with pytest.raises(NotFound):
            reports.pledges_behind(s, YEAR, known.org["B1"], "nonsense")
        with pytest.raises(NotFound):
            reports.pledge_year_figures(s, YEAR, org="NOPE")
    assert rows["B1"] == {
        "cycles": 2,
        "made": 5,
        "approved": 3,
        "kept_on_time": 2,
        "late_reports": 1,
        "grades": Counter({"好": 1}),
    }
    assert rows["B2"] == {
        "cycles": 1,
        "made": 4,
        "approved": 4,
        "kept_on_time": 4,
        "late_reports": 0,
        "grades": Counter({"差": 1}),
    }
    assert rows["B3"]["cycles"] == 0 and "HQ" not in rows  # every branch is listed; the committee is not
    assert sorted(b1_only) == ["B1"] and sorted(by_id) == ["B2"]  # B1G1 is a group: not a branch of its own
    assert [r.instance_id for r in kept] == [known.ids["X1"]]
    assert [r.instance_id for r in good] == [known.ids["X1"]]
    assert [r.instance_id for r in approved] == [known.ids["X1"]]


def test_grades_per_organisation(engine: Engine, known: Known) -> None:
    with engine.db.read() as s:
        rows = figures.org_grades(s, YEAR)
    assert {c: (r.grade, r.score, r.rectification) for c, r in rows.items()} == {
        "B1": ("较好", 85.0, None),
        "B2": ("较差", 50.0, "整改中"),
    }
    assert figures.grade_distribution(rows.values()) == {
        "好": 0,
        "较好": 1,
        "一般": 0,
        "较差": 1,
        "未定级": 0,
    }


def test_scope_is_the_subtree_below_each_dashboard_role(engine: Engine, known: Known) -> None:
    assert scope_of(engine, "secretary").org_ids is None  # the committee at the top sees everything
    assert scope_of(engine, "office").org_ids is None
    assert scope_of(engine, "sec1").org_ids == {known.org["B1"], known.org["B1G1"]}
    assert scope_of(engine, "sec2").org_ids == {known.org["B2"]}
    assert scope_of(engine, "member1").org_ids == frozenset()  # a member has no dashboard
    sec2 = scope_of(engine, "sec2")
    assert sec2.narrowed("B1") is None and sec2.narrowed("NOPE") is None
    assert scope_of(engine, "secretary").narrowed("B1").org_ids == {known.org["B1"], known.org["B1G1"]}
    with engine.db.read() as s:
        assert list(figures.projects_by_stage(s, YEAR, sec2.org_ids)) == ["B2"]
        assert list(figures.overdue_tasks(s, NOW, sec2.org_ids)) == ["B2"]
        assert list(reports.yearly_compliance(s, YEAR, within=sec2.org_ids)) == ["B2"]
        assert list(reports.pledge_year_figures(s, YEAR, within=sec2.org_ids)) == ["B2"]
        assert list(figures.org_grades(s, YEAR, sec2.org_ids)) == ["B2"]
        assert reports.pledge_year_figures(s, YEAR, org="B1", within=sec2.org_ids) == {}


# --- 评选优秀党建项目 ---------------------------------------------------------------------------------


def test_candidates_are_the_projects_closed_with_jiexiang_in_the_year(engine: Engine, known: Known) -> None:
    with engine.db.read() as s:
        everyone = excellence.candidates(s, YEAR, None)
        b1 = excellence.candidates(s, YEAR, {known.org["B1"]})
    assert [c.instance_id for c in everyone] == [known.ids[n] for n in ("P2", "P8", "P9", "P10")]
    assert [c.instance_id for c in b1] == [known.ids[n] for n in ("P2", "P8", "P9")]
    assert everyone[0].acceptance_grade == "优秀" and everyone[0].brand_name == "平安365品牌"
    assert [excellence.cap(n) for n in (0, 1, 2, 3, 4, 5)] == [0, 0, 1, 1, 2, 2]
    assert excellence.cap(4, 0.75) == 3
    with pytest.raises(ValueError):
        excellence.cap(4, 1.5)


def test_the_selection_cap_is_enforced_and_the_choice_marked_on_the_promotion_record(
    engine: Engine, known: Known
) -> None:
    p2, p8, p9, p3 = (known.ids[n] for n in ("P2", "P8", "P9", "P3"))
    with pytest.raises(ValidationFailed) as err, engine.db.write() as s:  # 3 of 4 accepted: over half
        excellence.select_excellent(s, YEAR, "secretary", [p2, p8, p9], NOW)
    assert "at most 2 of the 4" in err.value.fields["selected"][0]
    with pytest.raises(ValidationFailed), engine.db.write() as s:
        excellence.select_excellent(s, YEAR, "secretary", [], NOW)
    with pytest.raises(NotFound), engine.db.write() as s:  # not accepted (不予立项)
        excellence.select_excellent(s, YEAR, "secretary", [p3], NOW)
    with pytest.raises(Forbidden), engine.db.write() as s:  # a branch secretary does not select
        excellence.select_excellent(s, YEAR, "sec1", [p2], NOW)
    with pytest.raises(InvalidState), engine.db.write() as s:  # nothing accepted that year
        excellence.select_excellent(s, YEAR + 1, "secretary", [p2], NOW)
    with engine.db.read() as s:  # nothing was written by the refusals
        assert all("excellent_year" not in (s.get(Instance, i).data or {}) for i in (p2, p8, p9))

    with engine.db.write() as s:
        assert excellence.select_excellent(s, YEAR, "secretary", [p8, p2, p8], NOW) == [p8, p2]
    with engine.db.read() as s:
        marked = {i: s.get(Instance, i) for i in (p2, p8, p9)}
        events = list(
            s.execute(select(AuditEvent).where(AuditEvent.action == "project.selected_excellent")).scalars()
        )
        chosen = [c.instance_id for c in excellence.candidates(s, YEAR, None) if c.selected]
    assert (
        marked[p2].data["excellent_year"] == YEAR and marked[p2].data["excellent_selected_by"] == "secretary"
    )
    assert marked[p2].data["brand_name"] == "平安365品牌"  # the promotion record is kept, the mark added
    assert marked[p2].revision == 2 and "excellent_year" not in marked[p9].data
    assert sorted(e.instance_id for e in events) == sorted([p2, p8])
    assert (
        events[0].payload["cap"] == 2
        and events[0].payload["accepted"] == 4
        and events[0].actor == "secretary"
    )
    assert sorted(chosen) == sorted([p2, p8])
    with pytest.raises(InvalidState) as again, engine.db.write() as s:  # once a year
        excellence.select_excellent(s, YEAR, "secretary", [p9], NOW)
    assert again.value.details["reason"] == excellence.ALREADY_SELECTED
    assert_chain_intact(engine)


def test_a_larger_share_can_be_configured(engine: Engine, known: Known) -> None:
    picks = [known.ids[n] for n in ("P2", "P8", "P9")]
    with engine.db.write() as s:
        assert excellence.select_excellent(s, YEAR, "secretary", picks, NOW, ratio=0.75) == picks
