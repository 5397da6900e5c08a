"""A pledge through the year's monitoring to its evaluation and grade, entirely by clicking.

Picks up where tests/test_browser_pledge.py stops: the demo's 杨帆 (yangfan, 机关党支部) has her sign
hung and is in 监督践诺. Each quarter falls due (the worker's path: due timers fire a quarter on);
she reports progress row by row and the secretary (liuyang) comments, with the half-year review
after the second. At year end she gives her account (述诺), her three fellow members rate her
(互评), the masses' representative (songjia) rates her (帮评) and the branch rates her (组织评定);
the DMN weights the four into a score and a grade (好 / 中 / 差), shown on the instance page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from engine.models import Instance
from tests.browser import LiveServer, list_row, sign_in_as, sign_out, submit_task, take
from web import engine_of

MEMBER, SECRETARY, MASSES = "yangfan", "liuyang", "songjia"
PEERS = ("huangli", "zhaolei", "qianjin")  # the branch's other members
QUARTER = timedelta(days=93)


def _quarter(page, server: LiveServer, instance_url: str, number: int) -> None:  # type: ignore[no-untyped-def]
    take(page, server, MEMBER, instance_url, "监督践诺", "季度践诺报告")
    for i, status in enumerate(("已完成" if number == 4 else "推进中", "推进中")):
        row = list_row(page, "progress", i)
        row.get_by_label("承诺序号").fill(str(i + 1))
        row.get_by_label(status, exact=True).check()
        row.get_by_label("进展说明").fill(f"第{number}季度：按计划推进")
    submit_task(page)
    sign_out(page)
    take(page, server, SECRETARY, instance_url, "监督践诺", "季度讲评")
    page.get_by_label("支部季度讲评").fill(f"第{number}季度践诺情况良好")
    submit_task(page)
    if number == 2:
        page.goto(instance_url)
        page.locator("section.open-tasks").get_by_role("link", name="半年点评", exact=True).click()
        page.get_by_label("支部半年点评").fill("上半年进度正常，继续保持")
        page.locator("fieldset", has_text="践诺进度是否正常").get_by_label("是", exact=True).check()
        submit_task(page)
    sign_out(page)


def _rate(page, server: LiveServer, user: str, instance_url: str, task: str, label: str, score: int) -> None:  # type: ignore[no-untyped-def]
    take(page, server, user, instance_url, "评议考核", task)
    page.get_by_label(label).fill(str(score))
    submit_task(page)
    sign_out(page)


def test_a_pledge_is_monitored_four_quarters_then_evaluated_and_graded(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    engine = engine_of(live_server.app)
    with engine.db.read() as s:
        instance_id = s.execute(
            select(Instance.id).where(Instance.business_key.like(f"pledge:%:{MEMBER}"))
        ).scalar_one()
    instance_url = f"{live_server.url}/instances/{instance_id}"

    # 4. 监督践诺: four quarters, each opened by its timer, reported and commented on
    for number in range(1, 5):
        assert engine.run_due_jobs(datetime.now(UTC) + QUARTER) >= 1
        _quarter(page, live_server, instance_url, number)

    # 5. 评议考核: her account, then peers, masses and branch rate her
    take(page, live_server, MEMBER, instance_url, "评议考核", "年终述诺")
    page.get_by_label("述诺报告").fill("全年承诺全部兑现，带动班组学习常态化")
    for i, outcome in enumerate(("按期兑现", "按期兑现")):
        row = list_row(page, "results", i)
        row.get_by_label("承诺序号").fill(str(i + 1))
        row.get_by_label(outcome, exact=True).check()
    page.get_by_label("自评分").fill("96")
    submit_task(page)
    sign_out(page)
    for peer in PEERS:
        _rate(page, live_server, peer, instance_url, f"党员互评 · {peer}", "互评得分", 95)
    _rate(page, live_server, MASSES, instance_url, "群众帮评", "群众评议得分", 96)
    _rate(page, live_server, SECRETARY, instance_url, "组织评定", "支部评定得分", 97)

    sign_in_as(page, live_server, SECRETARY)
    page.goto(instance_url)
    assert page.locator("ol.stage-progress li.step-done").count() == 5
    data = engine.instance(instance_id).data
    assert data["grade"] == "好" and data["score"] >= 95
    assert [r["outcome"] for r in data["results"]] == ["按期兑现", "按期兑现"]
    assert "好" in page.locator("main").inner_text()
    assert page.js_errors == []
