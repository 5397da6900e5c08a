"""The instances pages: start a process, the pledge bulk start, the list, the detail page and diagram.

Run as the seeded test directory's people (tests/directory.py): sec1 is B1's secretary, sec2 B2's,
office the party office at HQ above both, outsider holds no role at all.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from engine import Engine
from engine.directory import org_by_code, user_by_name
from engine.models import HumanTask, Instance, User
from engine.queries import can_see_instance
from tests.lifecycle_helpers import PROCESS as LIFECYCLE
from tests.lifecycle_helpers import lifecycle_files
from tests.test_pledge_cycle import PLEDGES, pledge_files, task_of
from tests.web import post, sign_in
from web.formatting import BEIJING
from web.instances import progress

STAGES = ["计划立项", "任务分解", "调研实践", "动态管控", "考评验收", "总结推广"]
PLEDGE_STAGES = ["党员承诺", "支部审诺", "挂牌亮诺", "监督践诺", "评议考核"]


@pytest.fixture
def lifecycle(engine: Engine) -> Engine:
    engine.deploy(lifecycle_files(), "designer", LIFECYCLE)
    return engine


@pytest.fixture
def pledge(engine: Engine) -> Engine:
    engine.deploy(pledge_files(), "designer", "pledge_cycle")
    return engine


def org_id(engine: Engine, code: str) -> int:
    with engine.db.read() as s:
        return org_by_code(s, code).id


def instances_of(engine: Engine, process: str) -> list[Instance]:
    with engine.db.read() as s:
        return list(
            s.execute(select(Instance).where(Instance.process_key == process).order_by(Instance.id)).scalars()
        )


def listed(client: FlaskClient, query: str = "") -> list[int]:
    """Instance ids on one page of the list, in the order shown."""
    response = client.get(f"/instances/{query}")
    assert response.status_code == 200
    return [int(i) for i in re.findall(r'data-instance="(\d+)"', response.get_data(as_text=True))]


def start_web(client: FlaskClient, engine: Engine, org: str, title: str) -> int:
    before = {i.id for i in instances_of(engine, LIFECYCLE)}
    response = post(
        client, "/instances/new", {"process": LIFECYCLE, "org": org_id(engine, org), "title": title}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    (new,) = {i.id for i in instances_of(engine, LIFECYCLE)} - before
    return new


# --- start ---------------------------------------------------------------------------------------


def test_a_branch_secretary_starts_a_project_and_lands_on_the_first_task_or_the_instance(
    web_app: Flask, lifecycle: Engine
) -> None:
    sec1 = sign_in(web_app, "sec1")
    page = sec1.get("/instances/new").get_data(as_text=True)
    assert "第一党支部" in page and "第一党小组" in page
    assert "第二党支部" not in page and "公司党委" not in page  # only where sec1 may start
    assert 'value="pledge_cycle"' not in page  # started per member, by the bulk start only

    response = post(
        sec1, "/instances/new", {"process": LIFECYCLE, "org": org_id(lifecycle, "B1"), "title": "红色物业"}
    )
    assert response.status_code == 302
    (inst,) = instances_of(lifecycle, LIFECYCLE)
    assert (inst.title, inst.stage, inst.status) == ("红色物业", "计划立项", "running")
    with lifecycle.db.read() as s:
        first = s.execute(select(HumanTask).where(HumanTask.instance_id == inst.id)).scalar_one()
    # sec1 fills in the application: straight to it if the task pages exist, else the instance
    expected = {f"/tasks/{first.id}", f"/instances/{inst.id}"}
    assert response.headers["Location"] in expected
    if "tasks.show" not in web_app.view_functions:
        assert response.headers["Location"] == f"/instances/{inst.id}"

    detail = sec1.get(f"/instances/{inst.id}").get_data(as_text=True)
    assert "红色物业" in detail and "填写项目申报书" in detail
    assert f'data-task="{first.id}"' in detail


def test_bad_start_input_is_shown_on_the_form_and_nothing_is_started(
    web_app: Flask, lifecycle: Engine
) -> None:
    sec1 = sign_in(web_app, "sec1")
    b1 = org_id(lifecycle, "B1")
    for data, field in [
        ({"process": LIFECYCLE, "org": b1, "title": "  "}, "err-title"),
        ({"process": LIFECYCLE, "org": b1, "title": "长" * 101}, "err-title"),
        ({"process": "no_such", "org": b1, "title": "x"}, "err-process"),
        ({"process": "pledge_cycle", "org": b1, "title": "x"}, "err-process"),
        ({"process": LIFECYCLE, "org": "B1; drop", "title": "x"}, "err-org"),
    ]:
        response = post(sec1, "/instances/new", data)
        assert response.status_code == 400
        assert f'id="{field}"' in response.get_data(as_text=True)
    assert instances_of(lifecycle, LIFECYCLE) == []


def test_the_engine_still_refuses_an_organisation_outside_the_choices(
    web_app: Flask, lifecycle: Engine
) -> None:
    sec1 = sign_in(web_app, "sec1")
    response = post(
        sec1, "/instances/new", {"process": LIFECYCLE, "org": org_id(lifecycle, "B2"), "title": "越权"}
    )
    assert response.status_code == 403
    assert (
        post(sec1, "/instances/new", {"process": LIFECYCLE, "org": 99999, "title": "无"}).status_code == 404
    )
    assert instances_of(lifecycle, LIFECYCLE) == []


def test_a_user_without_a_role_cannot_start(web_app: Flask, lifecycle: Engine) -> None:
    outsider = sign_in(web_app, "outsider")
    page = outsider.get("/instances/new").get_data(as_text=True)
    assert "不能发起流程" in page and 'name="process"' not in page
    response = post(
        outsider, "/instances/new", {"process": LIFECYCLE, "org": org_id(lifecycle, "B1"), "title": "x"}
    )
    assert response.status_code == 403
    assert instances_of(lifecycle, LIFECYCLE) == []


def test_posts_without_the_csrf_token_are_refused(web_app: Flask, lifecycle: Engine, pledge: Engine) -> None:
    sec1 = sign_in(web_app, "sec1")
    b1 = org_id(lifecycle, "B1")
    form = {"process": LIFECYCLE, "org": b1, "title": "x"}
    assert sec1.post("/instances/new", data=form).status_code == 400
    year = datetime.now(BEIJING).year
    assert sec1.post("/instances/pledge-cycle", data={"org": b1, "year": year}).status_code == 400
    assert instances_of(lifecycle, LIFECYCLE) == [] and instances_of(pledge, "pledge_cycle") == []


# --- pledge bulk start -----------------------------------------------------------------------------


def test_the_pledge_bulk_start_is_idempotent(web_app: Flask, pledge: Engine) -> None:
    sec1 = sign_in(web_app, "sec1")
    b1, year = org_id(pledge, "B1"), datetime.now(BEIJING).year
    assert 'action="/instances/pledge-cycle"' in sec1.get("/instances/new").get_data(as_text=True)

    first = post(sec1, "/instances/pledge-cycle", {"org": b1, "year": year}, follow_redirects=True)
    assert "新启动 2 人，已在进行 0 人" in first.get_data(as_text=True)
    again = post(sec1, "/instances/pledge-cycle", {"org": b1, "year": year}, follow_redirects=True)
    assert "新启动 0 人，已在进行 2 人" in again.get_data(as_text=True)

    cycles = instances_of(pledge, "pledge_cycle")
    assert sorted(i.business_key for i in cycles) == [f"pledge:{year}:member1", f"pledge:{year}:member2"]
    one = next(i for i in cycles if i.data["member"] == "member1")
    assert one.data["peers"] == ["member2"] and one.data["year"] == year and one.data["post"] == "党员责任岗"
    assert one.stage == "党员承诺"
    assert set(listed(sec1, f"?process=pledge_cycle&year={year}")) == {i.id for i in cycles}


def test_a_members_post_carries_over_from_last_years_cycle(web_app: Flask, pledge: Engine) -> None:
    year = datetime.now(BEIJING).year
    pledge.start(
        "pledge_cycle",
        "sec1",
        "B1",
        {
            "member": "member1",
            "member_name": "党员甲",
            "post": "变电运维责任岗",
            "peers": ["member2"],
            "year": year - 1,
            "period": "P3M",
            "quarters": 4,
            "remind_after": "P15D",
            "warn_after": "P15D",
        },
        business_key=f"pledge:{year - 1}:member1",
    )
    sec1 = sign_in(web_app, "sec1")
    post(sec1, "/instances/pledge-cycle", {"org": org_id(pledge, "B1"), "year": year})
    posts = {i.business_key: i.data["post"] for i in instances_of(pledge, "pledge_cycle")}
    assert posts[f"pledge:{year}:member1"] == "变电运维责任岗"
    assert posts[f"pledge:{year}:member2"] == "党员责任岗"


def test_only_the_branch_secretary_or_the_office_above_may_bulk_start(web_app: Flask, pledge: Engine) -> None:
    b1, year = org_id(pledge, "B1"), datetime.now(BEIJING).year
    assert (
        post(sign_in(web_app, "sec2"), "/instances/pledge-cycle", {"org": b1, "year": year}).status_code
        == 404
    )
    member = sign_in(web_app, "member1")
    assert post(member, "/instances/pledge-cycle", {"org": b1, "year": year}).status_code == 403
    assert 'action="/instances/pledge-cycle"' not in member.get("/instances/new").get_data(as_text=True)
    assert instances_of(pledge, "pledge_cycle") == []
    bad = post(sign_in(web_app, "sec1"), "/instances/pledge-cycle", {"org": b1, "year": year + 5})
    assert bad.status_code == 302 and instances_of(pledge, "pledge_cycle") == []

    office = sign_in(web_app, "office")
    done = post(
        office, "/instances/pledge-cycle", {"org": org_id(pledge, "B2"), "year": year}, follow_redirects=True
    )
    assert "新启动 1 人" in done.get_data(as_text=True)
    assert [i.data["member"] for i in instances_of(pledge, "pledge_cycle")] == ["member3"]


# --- who sees what ----------------------------------------------------------------------------------


def test_instances_are_seen_by_their_branch_and_the_office_above_only(
    web_app: Flask, lifecycle: Engine
) -> None:
    sec1, sec2, office = (sign_in(web_app, u) for u in ("sec1", "sec2", "office"))
    one = start_web(sec1, lifecycle, "B1", "一支部项目")
    two = start_web(sec2, lifecycle, "B2", "二支部项目")

    assert sec2.get(f"/instances/{one}").status_code == 404
    assert sec1.get(f"/instances/{two}").status_code == 404
    assert listed(sec1) == [one] and listed(sec2) == [two]
    assert listed(office) == [two, one]
    assert office.get(f"/instances/{one}").status_code == 200
    assert listed(sign_in(web_app, "outsider")) == []
    assert sign_in(web_app, "outsider").get(f"/instances/{one}").status_code == 404
    assert sec1.get("/instances/424242").status_code == 404


def test_the_list_agrees_with_the_engines_visibility_rule_for_everyone(
    web_app: Flask, lifecycle: Engine
) -> None:
    ids = [
        lifecycle.start(LIFECYCLE, starter, org, {"title": f"{org} 项目"}).id
        for starter, org in [("sec1", "B1"), ("sec2", "B2"), ("office", "HQ"), ("sec1", "B1G1")]
    ]
    with lifecycle.db.write() as s:  # hand B2's task to member1 (B1): a task holder sees its instance
        s.execute(
            update(HumanTask)
            .where(HumanTask.instance_id == ids[1])
            .values(assignee_id=user_by_name(s, "member1").id, assignment="owner")
        )
    with lifecycle.db.read() as s:
        users = list(s.execute(select(User).order_by(User.username)).scalars())
        expected = {
            u.username: sorted((i for i in ids if can_see_instance(s, u, s.get(Instance, i))), reverse=True)
            for u in users
        }
    assert expected["member1"] == [ids[3], ids[1], ids[0]]
    assert expected["outsider"] == [] and len(expected["office"]) == 4
    for username, seen in expected.items():
        assert listed(sign_in(web_app, username)) == seen, username
    assert sign_in(web_app, "member1").get(f"/instances/{ids[1]}").status_code == 200


# --- list filters and paging ------------------------------------------------------------------------


def test_list_filters_and_keyset_paging(web_app: Flask, lifecycle: Engine, pledge: Engine) -> None:
    b1 = [lifecycle.start(LIFECYCLE, "sec1", "B1", {"title": f"一支部项目 {n:02d}"}).id for n in range(27)]
    b2 = lifecycle.start(LIFECYCLE, "sec2", "B2", {"title": "二支部 100%_特别"}).id
    group = lifecycle.start(LIFECYCLE, "sec1", "B1G1", {"title": "党小组项目"}).id
    office = sign_in(web_app, "office")
    post(
        office,
        "/instances/pledge-cycle",
        {"org": org_id(lifecycle, "B2"), "year": datetime.now(BEIJING).year},
    )
    (cycle,) = [i.id for i in instances_of(pledge, "pledge_cycle")]
    everything = sorted([*b1, b2, group, cycle], reverse=True)

    first = office.get("/instances/").get_data(as_text=True)
    page1 = listed(office)
    assert page1 == everything[:25]
    cursor = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert listed(office, cursor.removeprefix("/instances/")) == everything[25:]

    assert listed(office, f"?org={org_id(lifecycle, 'B2')}") == [cycle, b2]
    assert listed(office, f"?org={org_id(lifecycle, 'B1')}&q=党小组") == [group]  # B1 includes its group
    assert listed(office, "?q=100%25_") == [b2]  # % and _ are text, not wildcards
    assert listed(office, "?q=%25") == [b2]
    assert listed(office, "?process=pledge_cycle") == [cycle]
    assert listed(office, "?stage=党员承诺") == [cycle]
    assert len(listed(office, "?stage=计划立项&q=一支部项目 0")) == 10

    with lifecycle.db.write() as s:
        s.execute(update(Instance).where(Instance.id == b1[0]).values(status="completed"))
        s.execute(
            update(Instance)
            .where(Instance.id == b1[1])
            .values(started_at=datetime(2024, 6, 30, 17, tzinfo=UTC))  # 2024-07-01 01:00 in Beijing
        )
    assert listed(office, "?status=completed") == [b1[0]]
    assert listed(office, "?year=2024") == [b1[1]]
    assert listed(office, "?from=2024-07-01&to=2024-07-01") == [b1[1]]
    assert listed(office, "?from=2024-06-01&to=2024-06-30") == []
    today = datetime.now(BEIJING).date()
    since = (today - timedelta(days=1)).isoformat()
    assert listed(office, f"?from={since}&q=一支部项目 01") == []  # started in 2024
    assert listed(office, f"?from={since}&q=一支部项目 00") == [b1[0]]

    bad = office.get("/instances/?year=abc&status=nope&org=x&from=2024-13-01&before=-1")
    assert bad.status_code == 200
    text = bad.get_data(as_text=True)
    assert "已忽略" in text and "年度" in text and "状态" in text and "开始日期" in text


# --- detail page: progress, data, diagram, timeline --------------------------------------------------


def test_the_progress_bar_shows_the_current_stage(web_app: Flask, pledge: Engine) -> None:
    sec1 = sign_in(web_app, "sec1")
    post(sec1, "/instances/pledge-cycle", {"org": org_id(pledge, "B1"), "year": datetime.now(BEIJING).year})
    inst = next(i for i in instances_of(pledge, "pledge_cycle") if i.data["member"] == "member1")

    page = sec1.get(f"/instances/{inst.id}").get_data(as_text=True)
    assert re.findall(r'class="step step-(\w+)" data-stage="([^"]+)"', page) == [
        ("current", "党员承诺"),
        *[("todo", s) for s in PLEDGE_STAGES[1:]],
    ]
    pledge.complete(task_of(pledge, "member1", "ut_commit", inst.id).id, "member1", {"pledges": PLEDGES})
    page = sec1.get(f"/instances/{inst.id}").get_data(as_text=True)
    assert re.search(r'class="step step-current" data-stage="支部审诺" aria-current="step"', page)
    assert 'class="step step-done" data-stage="党员承诺"' in page
    assert "审核承诺" in page  # the open task
    # the data, with the form's labels and no raw JSON
    data = page.split('class="instance-data"')[1].split("</section>")[0]
    assert "承诺事项" in data and "承诺目标" in data and "全年自学党章党规 12 次" in data
    assert "{&#34;" not in data and "{&#39;" not in data and "[&#39;" not in data  # no raw dicts or JSON


def test_the_lifecycle_stages_come_from_the_deployed_diagram_in_order(
    web_app: Flask, lifecycle: Engine
) -> None:
    sec1 = sign_in(web_app, "sec1")
    inst = start_web(sec1, lifecycle, "B1", "阶段顺序")
    page = sec1.get(f"/instances/{inst}").get_data(as_text=True)
    assert (
        re.findall(r'data-stage="([^"]+)"', page.split('class="stage-progress"')[1].split("</ol>")[0])
        == STAGES
    )


def test_progress_marks_parallel_stages_and_ended_instances() -> None:
    states = [s.state for s in progress(STAGES, "running", "动态管控", {"调研实践", "动态管控"})]
    assert states == ["done", "done", "current", "current", "todo", "todo"]
    rejected = [s.state for s in progress(STAGES, "completed", "计划立项", set())]
    assert rejected == ["done"] + ["skipped"] * 5
    assert {s.state for s in progress(STAGES, "completed", "总结推广", set())} == {"done"}
    assert {s.state for s in progress(STAGES, "running", None, set())} == {"todo"}


def test_the_diagram_xml_is_served_only_to_those_who_see_the_instance(
    web_app: Flask, lifecycle: Engine
) -> None:
    sec1 = sign_in(web_app, "sec1")
    inst = start_web(sec1, lifecycle, "B1", "流程图")
    response = sec1.get(f"/instances/{inst}/diagram.bpmn")
    assert response.status_code == 200 and response.mimetype == "application/xml"
    xml = response.get_data(as_text=True)
    assert '<bpmn:process id="project_lifecycle"' in xml and "bpmndi:BPMNDiagram" in xml
    assert xml == lifecycle_files()["project_lifecycle.bpmn"].decode("utf-8")
    for outsider in ("sec2", "outsider", "member3"):
        assert sign_in(web_app, outsider).get(f"/instances/{inst}/diagram.bpmn").status_code == 404
    assert sec1.get("/instances/424242/diagram.bpmn").status_code == 404
    assert web_app.test_client().get(f"/instances/{inst}/diagram.bpmn").status_code == 302  # sign in first

    page = sec1.get(f"/instances/{inst}").get_data(as_text=True)
    assert f'data-diagram-url="/instances/{inst}/diagram.bpmn"' in page
    assert 'data-active="apply"' in page
    assert "bpmn-navigated-viewer.production.min.js" in page and "js/diagram.js" in page
    assert "<script>" not in page and " style=" not in page and " onclick" not in page


def test_the_timeline_shows_who_did_what_newest_first(web_app: Flask, pledge: Engine) -> None:
    sec1 = sign_in(web_app, "sec1")
    post(sec1, "/instances/pledge-cycle", {"org": org_id(pledge, "B1"), "year": datetime.now(BEIJING).year})
    inst = next(i for i in instances_of(pledge, "pledge_cycle") if i.data["member"] == "member1")
    pledge.complete(task_of(pledge, "member1", "ut_commit", inst.id).id, "member1", {"pledges": PLEDGES})
    page = sec1.get(f"/instances/{inst.id}").get_data(as_text=True)
    timeline = page.split('class="timeline"')[1]
    actions = re.findall(r'data-action="([^"]+)"', timeline)
    assert actions.index("task.completed") < actions.index("instance.started")  # newest first
    completed = timeline.split('data-action="task.completed"')[1].split("</li>")[0]
    assert "党员甲" in completed and "提交办理" in completed and "填写承诺书" in completed
    started = timeline.split('data-action="instance.started"')[1].split("</li>")[0]
    assert "一支部书记" in started and "发起流程" in started
