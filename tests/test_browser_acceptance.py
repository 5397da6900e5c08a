"""A project from practice to acceptance and promotion, then selected as excellent, by clicking.

Picks up where tests/test_browser_lifecycle.py stops: the demo's 平安“365” project (变电运维党支部)
has its contract signed and its plan approved, so its two members hold practice tasks. They report
progress (one with an evidence file); a month passes (the worker's path: due timers fire) and the
secretary reports the project complete; the office checks the round; the secretary submits the
summary; a review-committee member scores on site; the office records the survey and the democratic
evaluation (优秀) and the outcomes; the project closes at 总结推广, and the committee secretary
finds it on the excellent-project page, where the cap is enforced. The stage bar is checked at each
stage.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from engine.models import Instance
from tests.browser import (
    LiveServer,
    at_stage,
    fill_list,
    sign_in_as,
    sign_out,
    submit_task,
    take,
)
from web import engine_of

PROJECT_KEY = "lifecycle:DEMO-BD:平安365"
TITLE = "平安“365”安全管控机制"
MEMBERS = ("xiaoyu", "chengpeng")  # their practice tasks, as the demo decomposed the project
SECRETARY, OFFICE, JUDGE, COMMITTEE = "dengchao", "chenjing", "zhoumin", "wangjianguo"


def _report_progress(page, server: LiveServer, member: str, evidence: Path | None) -> None:  # type: ignore[no-untyped-def]
    sign_in_as(page, server, member)
    page.goto(f"{server.url}/inbox")
    page.get_by_role("link", name="实施任务并报送进展").first.click()
    page.wait_for_url("**/tasks/*")
    page.get_by_label("完成情况").fill(f"{member}：责任区方案已印发，开展安全讲评 12 次")
    if evidence is not None:
        page.locator("fieldset[data-field='progress.evidence'] input[type=file]").set_input_files(
            str(evidence)
        )
    submit_task(page)
    sign_out(page)


def yes(page, question: str) -> None:  # type: ignore[no-untyped-def]
    """Answer 是 to a yes/no question (a boolean field is a pair of radios under its legend)."""
    page.locator("fieldset", has_text=question).get_by_label("是", exact=True).check()


def test_a_project_goes_from_practice_through_acceptance_to_an_excellent_selection(
    page,
    live_server: LiveServer,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    engine = engine_of(live_server.app)
    with engine.db.read() as s:
        instance_id = s.execute(select(Instance.id).where(Instance.business_key == PROJECT_KEY)).scalar_one()
    instance_url = f"{live_server.url}/instances/{instance_id}"

    # 3. 调研实践: each member reports progress from the inbox, one with minutes as evidence
    minutes = tmp_path / "安全讲评记录.txt"
    minutes.write_text("2026 年第一季度安全讲评记录\n", encoding="utf-8")
    sign_in_as(page, live_server, SECRETARY)
    page.goto(instance_url)
    at_stage(page, "调研实践")
    sign_out(page)
    _report_progress(page, live_server, MEMBERS[0], minutes)
    _report_progress(page, live_server, MEMBERS[1], None)

    # 4. 动态管控: a month on, the round falls due; the secretary reports the project complete
    assert engine.run_due_jobs(datetime.now(UTC) + timedelta(days=31)) >= 1
    take(page, live_server, SECRETARY, instance_url, "动态管控", "阶段进展汇报")
    page.get_by_label("本期进展").fill("两项任务均已完成，安全讲评常态化")
    fill_list(page, "finished_items", ["实施方案细则", "阶段成效总结"])
    yes(page, "项目已全部完成")
    submit_task(page)
    sign_out(page)
    take(page, live_server, OFFICE, instance_url, "动态管控", "动态管控检查")
    page.get_by_label("按期推进").check()
    submit_task(page)
    sign_out(page)

    # 5. 考评验收: summary, on-site review, survey and democratic evaluation → 优秀
    take(page, live_server, SECRETARY, instance_url, "考评验收", "提交总结与自评")
    page.get_by_label("总结报告").fill("全年零违章，青年职工安全培训全覆盖")
    page.get_by_label("自评得分").fill("92")
    fill_list(page, "problems_solved", ["青年职工安全意识薄弱", "班组安全学习形式单一"])
    submit_task(page)
    sign_out(page)
    take(page, live_server, JUDGE, instance_url, "考评验收", "实地评审")
    page.get_by_label("实地评审得分").fill("95")
    page.get_by_label("评审意见").fill("台账完整，成效明显")
    submit_task(page)
    sign_out(page)
    take(page, live_server, OFFICE, instance_url, "考评验收", "问卷调查与民主测评")
    page.get_by_label("问卷调查得分").fill("90")
    page.get_by_label("民主测评得分").fill("88")
    submit_task(page)

    # 6. 总结推广: the office records the outcomes and the project closes
    page.goto(instance_url)
    at_stage(page, "总结推广")
    page.locator("section.open-tasks").get_by_role("link", name="登记成果与推广", exact=True).click()
    page.wait_for_url("**/tasks/*")
    fill_list(page, "theory_outcomes", ["《变电站安全管控机制研究》"])
    fill_list(page, "institution_outcomes", ["平安365安全管控制度"])
    page.get_by_label("党建品牌名称").fill("平安365")
    yes(page, "推荐为优秀党建项目")
    submit_task(page)
    page.goto(instance_url)
    assert page.locator("ol.stage-progress li.step-done").count() == 6
    sign_out(page)

    data = engine.instance(instance_id).data
    assert data["outcome"] == "结项" and data["acceptance_grade"] == "优秀"
    assert data["problems_solved"] == ["青年职工安全意识薄弱", "班组安全学习形式单一"]

    # the committee sees it among the year's candidates; with one project accepted, the cap (at most
    # half of those accepted, rounded down) allows none, and the server says so
    sign_in_as(page, live_server, COMMITTEE)
    page.goto(f"{live_server.url}/dashboard/selection")
    row = page.locator("tr", has_text=TITLE)
    assert "优秀" in row.inner_text() and "平安365" in row.inner_text()
    assert "本年度已验收 1 个，最多可评选 0 个" in page.locator("p.note").inner_text()
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="确认评选结果").click()
    assert page.locator("[role=alert]").count() == 1
    assert page.locator("tr", has_text=TITLE).get_by_role("checkbox").is_checked()  # the choice is kept
    assert [e for e in page.js_errors if "status of 422" not in e] == []  # the refusal itself is a 422
