"""A project from application to the signed contract and its approved plan, by clicking in a browser.

The branch secretary (liuyang, 机关党支部) starts a project and fills in the application; the party
office (chenjing) returns it once with a comment; the secretary revises; the office approves and
convenes the opening meeting with three judges; each judge scores; the committee secretary
(wangjianguo) and the branch secretary sign the contract, the secretary decomposes the project into
two members' tasks and the office approves the plan, so the project enters 调研实践 (where
tests/test_browser_acceptance.py takes the demo's project on to acceptance). The
instance page is checked after each step: the stage and whose task is open. The database is read
only to assert what was saved, never to move the process.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from tests.browser import (
    LiveServer,
    at_stage,
    fill_list,
    list_row,
    open_instance,
    sign_in_as,
    sign_out,
    submit_task,
    take,
)
from web import engine_of
from web.demo_lifecycle import PROCESS

TITLE = "青年安全先锋岗建设"
JUDGES = ["zhoumin", "wuqiang", "zhengyu"]
TODAY = date.today()
WORK_ITEMS = [("yangfan", "安全责任区方案", 30), ("huangli", "季度技能比武", 90)]


def test_a_project_goes_from_application_through_a_return_and_scoring_to_the_signed_contract(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    # 1. the branch secretary starts a project for her branch and lands on the application form
    sign_in_as(page, live_server, "liuyang")
    page.locator("nav.sections").get_by_role("link", name="流程实例").click()
    page.get_by_role("link", name="发起流程").click()
    start = page.locator("section.start-process")  # a label wrapping a select is named with its option
    start.get_by_label(re.compile("^流程")).select_option(PROCESS)
    start.get_by_label(re.compile("^组织")).select_option(label="机关党支部")
    start.get_by_label(re.compile("^标题")).fill(TITLE)
    start.get_by_role("button", name="发起", exact=True).click()
    page.wait_for_url("**/tasks/*")
    assert page.get_by_role("heading", level=1).inner_text() == "填写项目申报书"
    assert page.get_by_label("项目名称").input_value() == TITLE  # the start title carries over
    page.get_by_label("创新探索型").check()
    fill_list(page, "problems", ["青年职工安全意识薄弱", "班组安全学习形式单一"])
    page.get_by_label("项目目标").fill("全年零违章，青年职工安全培训全覆盖")
    page.get_by_label("主要措施").fill("党员安全责任区、每日安全讲评、季度技能比武")
    fill_list(page, "milestones", ["一季度完成方案"])
    page.get_by_label("经费预算(元)").fill("20000")
    page.get_by_label("实施开始日期").fill(TODAY.isoformat())
    page.get_by_label("实施结束日期").fill((TODAY + timedelta(days=300)).isoformat())
    submit_task(page)
    open_instance(page, TITLE)  # found in the list by its title
    instance_url = page.url
    at_stage(page, "计划立项")
    sign_out(page)

    # 2. the party office returns it with a comment
    take(page, live_server, "chenjing", instance_url, "计划立项", "完整性审核")
    assert "青年职工安全意识薄弱" in page.locator("section.task-material").inner_text()
    page.get_by_label("退回修改").check()
    page.get_by_label("审核意见").fill("请补充经费明细")
    submit_task(page)
    sign_out(page)

    # 3. the secretary sees the comment, revises the budget and submits again
    take(page, live_server, "liuyang", instance_url, "计划立项", "填写项目申报书")
    assert "请补充经费明细" in page.locator("main").inner_text()
    assert page.get_by_label("项目目标").input_value() == "全年零违章，青年职工安全培训全覆盖"
    page.get_by_label("经费预算(元)").fill("18500")
    submit_task(page)
    sign_out(page)

    # 4. the office approves, then convenes the opening meeting with three judges
    take(page, live_server, "chenjing", instance_url, "计划立项", "完整性审核")
    page.get_by_label("通过", exact=True).check()
    submit_task(page)
    page.goto(instance_url)
    page.locator("section.open-tasks").get_by_role("link", name="组织开标会", exact=True).click()
    page.get_by_label("开标会日期").fill(TODAY.isoformat())
    fill_list(page, "judges", JUDGES)
    submit_task(page)
    sign_out(page)

    # 5. each judge scores alone (88 points each: 立项)
    for judge in JUDGES:
        take(page, live_server, judge, instance_url, "计划立项", f"评委独立打分 · {judge}")
        for criterion in ("方案优劣", "工作业绩", "信誉", "能力"):
            page.get_by_label(criterion).fill("22")
        page.get_by_label("评审意见").fill("方案具体，措施可行")
        submit_task(page)
        sign_out(page)

    # 6. the committee secretary and the branch secretary sign the contract
    for signer, task in (
        ("wangjianguo", "党委书记签订项目实施合同"),
        ("liuyang", "支部书记签订项目实施合同"),
    ):
        take(page, live_server, signer, instance_url, "计划立项", task)
        page.get_by_label("已签署").check()
        page.get_by_label("签署日期").fill(TODAY.isoformat())
        submit_task(page)
        page.goto(instance_url)
        if signer == "wangjianguo":
            sign_out(page)
    at_stage(page, "任务分解")
    assert page.locator("ol.stage-progress li.step-done").first.get_attribute("data-stage") == "计划立项"
    assert (
        page.locator("section.open-tasks").get_by_role("link", name="编制实施计划书(任务分解)").count() == 1
    )

    engine = engine_of(live_server.app)
    instance_id = int(instance_url.rstrip("/").rsplit("/", 1)[1])
    data = engine.instance(instance_id).data
    assert data["budget"] == 18500 and data["comments"] == "请补充经费明细"
    assert data["initiation_score"] == 88 and data["initiation_decision"] == "立项"
    assert data["contract_committee_signed_on"] == TODAY.isoformat()

    # 7. the secretary decomposes the project into two members' tasks; the office approves the plan
    page.locator("section.open-tasks").get_by_role("link", name="编制实施计划书(任务分解)").click()
    page.wait_for_url("**/tasks/*")
    for i, (owner, deliverable, days) in enumerate(WORK_ITEMS):
        row = list_row(page, "work_items", i)
        row.get_by_label("责任党员(用户名)").fill(owner)
        row.get_by_label("交付成果").fill(deliverable)
        row.get_by_label("完成时限").fill((TODAY + timedelta(days=days)).isoformat())
    submit_task(page)
    sign_out(page)
    take(page, live_server, "chenjing", instance_url, "任务分解", "审核实施计划")
    page.get_by_label("通过", exact=True).check()
    submit_task(page)
    page.goto(instance_url)
    at_stage(page, "调研实践")
    practice = page.locator("section.open-tasks").inner_text()
    assert practice.count("实施任务并报送进展") == 2 and "杨帆" in practice and "黄丽" in practice
    assert page.js_errors == []
