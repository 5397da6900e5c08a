"""A member's pledge from commitment to the public board, entirely by clicking in a real browser.

The demo leaves 钱进 (qianjin, 机关党支部) with this year's pledge not yet written. He writes two
pledges (adding and removing rows in place); the branch secretary (liuyang) returns them once with
comments, he revises, she approves and hangs the sign (挂牌亮诺); then anyone, signed out, finds the
post on the public board. The instance page is checked at each stage; the database is read only
to assert what was saved.
"""

from __future__ import annotations

from datetime import date

from tests.browser import LiveServer, at_stage, fill_list, sign_in_as, sign_out, submit_task, take
from web import engine_of

MEMBER, SECRETARY = "qianjin", "liuyang"
TODAY = date.today()
DEADLINE = f"{TODAY.year}-12-31"


def fill_pledge(row, category: str, target: str, measure: str) -> None:  # type: ignore[no-untyped-def]
    row.get_by_label(category, exact=True).check()
    row.get_by_label("承诺目标").fill(target)
    row.get_by_label("具体措施").fill(measure)
    row.get_by_label("完成时限").fill(DEADLINE)


def test_a_pledge_is_written_returned_revised_approved_and_shown_on_the_public_board(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
    browser,  # type: ignore[no-untyped-def]
) -> None:
    # 1. the member opens his pledge from the inbox and writes two pledges
    sign_in_as(page, live_server, MEMBER)
    page.locator("nav.sections").get_by_role("link", name="待办").click()
    page.locator("table.inbox-table").get_by_role("link", name="填写承诺书", exact=True).click()
    page.wait_for_url("**/tasks/*")
    instance_url = page.locator(".task-facts a").first.get_attribute("href")
    assert instance_url is not None and "/instances/" in instance_url
    instance_url = live_server.url + instance_url
    pledges = page.locator("fieldset[data-rows='pledges']")
    rows = pledges.locator("[data-row]")
    assert rows.count() == 2  # at least two pledges: two rows to start with
    fill_pledge(rows.nth(0), "学习", "每月参加支部集中学习 1 次", "学习笔记每季度交支部检查")
    fill_pledge(rows.nth(1), "工作", "档案整理及时率达到 95%", "每周清理一次待归档材料")
    pledges.get_by_role("button", name="添加一项").click()  # in place, no round trip
    assert rows.count() == 3 and "/tasks/" in page.url
    fill_pledge(rows.nth(2), "服务", "结对帮带 1 名青年职工", "每季度谈心 1 次")
    rows.nth(1).get_by_role("button", name="删除").click()  # changed his mind about the second
    assert rows.count() == 2
    assert rows.nth(1).locator("[data-row-number]").inner_text() == "2"  # renumbered
    submit_task(page)
    sign_out(page)

    # 2. the secretary returns them with a comment on each and an overall comment
    take(page, live_server, SECRETARY, instance_url, "支部审诺", "审核承诺")
    assert "结对帮带 1 名青年职工" in page.locator("section.task-material").inner_text()
    page.get_by_label("退回修改").check()
    fill_list(page, "pledge_comments", ["同意", "请明确帮带对象"])
    page.get_by_label("总体意见").fill("请修改第二项后再报")
    submit_task(page)
    sign_out(page)

    # 3. the member sees the comments and revises the second pledge
    take(page, live_server, MEMBER, instance_url, "党员承诺", "填写承诺书")
    shown = page.locator("main").inner_text()
    assert "请明确帮带对象" in shown and "请修改第二项后再报" in shown
    second = page.locator("fieldset[data-rows='pledges'] [data-row]").nth(1)
    assert second.get_by_label("承诺目标").input_value() == "结对帮带 1 名青年职工"  # kept from before
    second.get_by_label("承诺目标").fill("结对帮带青年职工杨帆")
    page.get_by_label("修改说明").fill("已明确帮带对象")
    submit_task(page)
    sign_out(page)

    # 4. the secretary approves, then hangs the sign
    take(page, live_server, SECRETARY, instance_url, "支部审诺", "审核承诺")
    page.get_by_label("通过", exact=True).check()
    fill_list(page, "pledge_comments", ["同意", "同意"])
    submit_task(page)
    page.goto(instance_url)
    at_stage(page, "挂牌亮诺")
    page.locator("section.open-tasks").get_by_role("link", name="挂牌公示", exact=True).click()
    page.get_by_label("标识牌悬挂位置").fill("机关办公楼三楼党员责任岗标识牌")
    page.get_by_label("公示日期").fill(TODAY.isoformat())
    submit_task(page)
    page.goto(instance_url)
    at_stage(page, "监督践诺")
    sign_out(page)

    data = engine_of(live_server.app).instance(int(instance_url.rsplit("/", 1)[1])).data
    assert [p["target"] for p in data["pledges"]] == ["每月参加支部集中学习 1 次", "结对帮带青年职工杨帆"]
    assert data["published"] is True

    # 5. anyone, signed out, finds the post on the public board
    public = browser.new_context(locale="zh-CN")
    try:
        visitor = public.new_page()
        visitor_errors: list[str] = []
        visitor.on("pageerror", lambda err: visitor_errors.append(str(err)))
        visitor.on("console", lambda msg: visitor_errors.append(msg.text) if msg.type == "error" else None)
        visitor.goto(f"{live_server.url}/board")
        assert "/login" not in visitor.url
        visitor.get_by_role("link", name="机关党支部").click()
        card = visitor.locator("li.post-card").filter(has_text="钱进")
        assert "2 项承诺" in card.inner_text()
        card.get_by_role("link").first.click()
        visitor.wait_for_url("**/board/post/*")
        text = visitor.locator("main").inner_text()
        assert "每月参加支部集中学习 1 次" in text and "结对帮带青年职工杨帆" in text
        assert visitor_errors == []
    finally:
        public.close()
    assert page.js_errors == []
