"""Organisation grading (分类定级 / 晋位升级), end to end through the engine as the people its lanes name.

Deploys the real files (workflows/org_grading.bpmn, workflows/org_grading_*.dmn, forms/org_grading_*.json).
Stages: 支部自评 → 群众初评 → 党委定级, then for 一般 / 较差: 整改提高 → 晋位升级.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from engine import Engine, Forbidden, ValidationFailed
from engine.directory import add_user, grant
from engine.figures import CHINA, grade_distribution, org_grades
from engine.queries import instance_view
from tests.helpers import assert_chain_intact, inbox_of, only_task

ROOT = Path(__file__).resolve().parent.parent
PROCESS = "org_grading"
YEAR = 2026
STANDARDS = ("organisation", "members", "institutions", "centre", "foundation")


def grading_files() -> dict[str, bytes]:
    paths = [ROOT / "workflows" / "org_grading.bpmn"]
    paths += sorted((ROOT / "workflows").glob("org_grading_*.dmn"))
    paths += sorted((ROOT / "forms").glob("org_grading_*.json"))
    return {p.name: p.read_bytes() for p in paths}


@pytest.fixture
def grading(engine: Engine) -> Engine:
    with engine.db.write() as s:
        add_user(s, "masses1", "群众代表甲")
        grant(s, "masses1", "B1", "masses")
    engine.deploy(grading_files(), "designer", PROCESS)
    return engine


def start(engine: Engine, org: str = "B1") -> int:
    inst, created = engine.start_once(
        PROCESS,
        "office",
        org,
        f"grading:{YEAR}:{org}",
        {"year": YEAR, "title": f"{YEAR} 年度分类定级 · {org}"},
    )
    assert created
    return inst.id


def each(points: float) -> dict[str, float]:
    return dict.fromkeys(STANDARDS, points)


def stage(engine: Engine, instance_id: int) -> str | None:
    with engine.db.read() as s:
        return instance_view(s, instance_id).stage


def data(engine: Engine, instance_id: int) -> dict:
    with engine.db.read() as s:
        return instance_view(s, instance_id).data


def assess(engine: Engine, inst: int, self_each: float, masses: float, committee_each: float) -> list[str]:
    """Self-assessment, the masses' initial view and the committee's grading; the stages seen on the way."""
    stages = [stage(engine, inst)]
    task = only_task(engine, "sec1", "ut_self")
    assert inbox_of(engine, "sec2") == []  # another branch's secretary has nothing of B1's
    with pytest.raises(Forbidden):
        engine.complete(task.id, "sec2", {"self_scores": each(self_each), "self_summary": "自评"})
    engine.complete(task.id, "sec1", {"self_scores": each(self_each), "self_summary": "全年工作自评"})
    stages.append(stage(engine, inst))
    view = "满意" if masses >= 80 else "基本满意"
    engine.complete(
        only_task(engine, "masses1", "ut_masses").id, "masses1", {"masses_view": view, "masses_score": masses}
    )
    stages.append(stage(engine, inst))
    engine.complete(
        only_task(engine, "secretary", "ut_committee").id,
        "secretary",
        {"committee_scores": each(committee_each), "committee_comment": "综合评定"},
    )
    return stages


def rectify(engine: Engine, inst: int, items: list[dict[str, str]]) -> None:
    engine.complete(
        only_task(engine, "sec1", "ut_plan").id,
        "sec1",
        {"rectification_items": items, "plan_summary": "方案"},
    )
    for item in items:
        owner = item["owner"] if item["owner"].startswith("member") else "sec1"
        task = only_task(engine, owner, "ut_item")
        assert task.stage == "整改提高" and task.due_at.date().isoformat() == item["due_date"]
        engine.complete(
            task.id, owner, {"item_report": {"status": "已完成", "result": f"{item['item']}已整改"}}
        )


DUE = (date.today() + timedelta(days=30)).isoformat()
ITEMS = [
    {"item": "“三会一课”记录不全", "measure": "补齐台账,按月检查", "owner": "member1", "due_date": DUE},
    {"item": "党员活动阵地简陋", "measure": "改造活动室", "owner": "member2", "due_date": DUE},
]


@pytest.mark.parametrize(
    ("self_each", "masses", "committee_each", "score", "grade"),
    [
        (19, 90, 19, 94.0, "好"),
        (18, 90, 18, 90.0, "好"),  # the edge of 好
        (17, 80, 17, 84.0, "较好"),
        (16, 80, 16, 80.0, "较好"),  # the edge of 较好
    ],
)
def test_good_grades_end_after_the_committee(
    grading: Engine, self_each: float, masses: float, committee_each: float, score: float, grade: str
) -> None:
    inst = start(grading)
    stages = assess(grading, inst, self_each, masses, committee_each)
    assert stages == ["支部自评", "群众初评", "党委定级"]
    result = data(grading, inst)
    assert (result["w_self"], result["w_masses"], result["w_committee"]) == (20, 20, 60)
    assert result["self_score"] == self_each * 5 and result["committee_score"] == committee_each * 5
    assert (result["final_score"], result["grade"], result["needs_rectification"]) == (score, grade, False)
    with grading.db.read() as s:
        assert grading.instance(inst).status == "completed"
        row = org_grades(s, YEAR)["B1"]
    assert (row.grade, row.score, row.rectification) == (grade, score, None)
    assert inbox_of(grading, "sec1") == [] and inbox_of(grading, "secretary") == []
    assert_chain_intact(grading)


@pytest.mark.parametrize(
    ("self_each", "masses", "committee_each", "score", "grade"),
    [
        (16, 60, 13, 67.0, "一般"),
        (12, 60, 12, 60.0, "一般"),  # the edge of 一般
        (12, 40, 10, 50.0, "较差"),
    ],
)
def test_low_grades_rectify_item_by_item_until_the_committee_signs_off(
    grading: Engine, self_each: float, masses: float, committee_each: float, score: float, grade: str
) -> None:
    inst = start(grading)
    assess(grading, inst, self_each, masses, committee_each)
    result = data(grading, inst)
    assert (result["final_score"], result["grade"], result["needs_rectification"]) == (score, grade, True)
    plan = only_task(grading, "sec1", "ut_plan")
    assert plan.stage == "整改提高"
    with pytest.raises(ValidationFailed) as err:  # every item needs an owner and a due date
        grading.complete(plan.id, "sec1", {"rectification_items": [{"item": "x", "measure": "y"}]})
    assert {"rectification_items.0.owner", "rectification_items.0.due_date"} <= set(err.value.fields)

    # each item is its owner's task, with its due date, tracked like a project task
    rectify(grading, inst, ITEMS)
    signoff = only_task(grading, "secretary", "ut_signoff")
    assert signoff.stage == "晋位升级"
    with grading.db.read() as s:
        assert org_grades(s, YEAR)["B1"].rectification == "整改中"
    with pytest.raises(ValidationFailed):  # a return must say what is still missing
        grading.complete(signoff.id, "secretary", {"signoff_verdict": "return"})
    grading.complete(
        signoff.id, "secretary", {"signoff_verdict": "return", "signoff_comment": "阵地改造未见成效"}
    )
    assert stage(grading, inst) == "整改提高"  # back to the branch for another round
    rectify(grading, inst, ITEMS[:1])
    grading.complete(
        only_task(grading, "secretary", "ut_signoff").id, "secretary", {"signoff_verdict": "approve"}
    )

    final = grading.instance(inst)
    assert final.status == "completed" and final.stage == "晋位升级"
    assert final.data["rectified"] is True and final.data["rectification_round"] == 2
    assert final.data["items_total"] == 1 and final.data["items_done"] == 1
    assert final.data["grade"] == grade  # the year's grade stays what it was; the rectification is recorded
    with grading.db.read() as s:
        rows = org_grades(s, YEAR)
    assert rows["B1"].rectification == "已晋位升级"
    assert grade_distribution(rows.values())[grade] == 1
    assert_chain_intact(grading)


def test_an_item_whose_owner_is_unknown_goes_to_the_branch_secretary(grading: Engine) -> None:
    inst = start(grading)
    assess(grading, inst, 12, 40, 10)
    items = [{"item": "组织生活不规范", "measure": "整改", "owner": "nobody", "due_date": DUE}]
    grading.complete(only_task(grading, "sec1", "ut_plan").id, "sec1", {"rectification_items": items})
    task = only_task(grading, "sec1", "ut_item")
    assert task.assignment is None and task.lane == "branch_secretary"


def test_grading_is_once_a_year_per_organisation_and_scoped(grading: Engine) -> None:
    inst = start(grading)
    again, created = grading.start_once(PROCESS, "office", "B1", f"grading:{YEAR}:B1", {"year": YEAR})
    assert (again.id, created) == (inst, False)
    with pytest.raises(Forbidden):
        grading.start_once(PROCESS, "sec2", "B1", f"grading:{YEAR + 1}:B1", {"year": YEAR + 1})
    start(grading, "B2")
    with grading.db.read() as s:
        b1 = grading.instance(inst).org_id
        assert sorted(org_grades(s, YEAR)) == ["B1", "B2"]
        assert sorted(org_grades(s, YEAR, within={b1})) == ["B1"]
        assert org_grades(s, YEAR + 1) == {}


def test_the_standards_are_the_same_in_the_self_assessment_and_the_committee_form() -> None:
    """The standards are configured in the two forms: they must list the same items, worth 100 in all."""
    forms = ROOT / "forms"
    own = json.loads((forms / "org_grading_self.json").read_text())["properties"]["self_scores"]
    committee = json.loads((forms / "org_grading_committee.json").read_text())["properties"][
        "committee_scores"
    ]
    assert own["properties"] == committee["properties"]
    assert set(own["required"]) == set(own["properties"]) == set(STANDARDS)
    assert sum(p["maximum"] for p in own["properties"].values()) == 100


def test_demo_gradings_load_once_at_different_stages(db) -> None:  # type: ignore[no-untyped-def]
    from collections import Counter

    from sqlalchemy import select

    from engine.models import Instance
    from web import demo, demo_grading

    engine = Engine(db, script_time_budget=1.0)
    assert demo_grading.load(engine) == []  # nothing deployed yet
    with engine.db.write() as s:
        demo._load_directory(s, demo.DemoReport())
    engine.deploy(grading_files(), demo.DESIGNER, PROCESS)

    assert len(demo_grading.load(engine)) == 4
    assert demo_grading.load(engine) == []
    with engine.db.read() as s:
        rows = s.execute(select(Instance.stage, Instance.status).where(Instance.process_key == PROCESS)).all()
        grades = org_grades(s, engine.clock().astimezone(CHINA).year)
    assert Counter(rows) == Counter(
        {
            ("党委定级", "completed"): 1,
            ("群众初评", "running"): 1,
            ("整改提高", "running"): 1,
            ("支部自评", "running"): 1,
        }
    )
    assert (grades["DEMO-JG"].grade, grades["DEMO-BD"].grade, grades["DEMO-BD"].rectification) == (
        "好",
        "一般",
        "整改中",
    )
