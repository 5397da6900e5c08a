"""The inbox in a real browser: English, claiming and releasing, a stale submit, a phone screen.

The demo leaves the project 机关党支部标准化建设 waiting for the party office's completeness check
(完整性审核): a task that both office members, 陈静 (chenjing) and 孙丽 (sunli), may claim.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

from engine.models import HumanTask, User
from tests.browser import LiveServer, sign_in_as
from web import engine_of

PROJECT = "机关党支部标准化建设"
TASK = "完整性审核"
CATALOG = (
    Path(__file__).resolve().parent.parent / "web" / "translations" / "en" / "LC_MESSAGES" / "messages.po"
)


def english() -> dict[str, str]:
    """The English for each Chinese message id, as the catalog has it (empty until translated)."""
    with CATALOG.open("rb") as handle:
        return {m.id: m.string for m in read_po(handle) if isinstance(m.id, str)}


def check_in_english(shown: str, chinese: str, catalog: dict[str, str]) -> None:
    """``shown`` is the catalog's English for ``chinese`` when it has one, and in any case not Chinese."""
    assert shown != chinese, f"{chinese!r} is not translated"
    if catalog.get(chinese):
        assert shown == catalog[chinese]


def own_text(link) -> str:  # type: ignore[no-untyped-def]
    """A link's own label, without the count badge inside it."""
    return str(link.evaluate("a => a.firstChild.textContent.trim()"))


def project_row(page):  # type: ignore[no-untyped-def]
    """The inbox row of the demo project's completeness check."""
    return page.locator("table.inbox-table tr[data-task]").filter(
        has=page.get_by_role("link", name=TASK, exact=True)
    )


def open_project_task(page) -> None:  # type: ignore[no-untyped-def]
    page.locator("nav.sections").get_by_role("link", name="待办").click()
    page.wait_for_url("**/inbox/**")
    project_row(page).get_by_role("link", name=TASK, exact=True).click()
    page.wait_for_url("**/tasks/*")
    assert PROJECT in page.locator(".task-facts").inner_text()


def test_the_inbox_reads_in_english_after_switching_language(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """Fails until the lead fills the English catalog (web/translations/en): see tests/test_i18n.py."""
    catalog = english()
    sign_in_as(page, live_server, "chenjing")
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()
    page.locator("nav.sections a[data-section='inbox.index']").click()
    page.wait_for_url("**/inbox/**")

    assert page.locator("html").get_attribute("lang") == "en"
    nav = page.locator("nav.sections a[data-section='inbox.index']")
    check_in_english(own_text(nav), "待办", catalog)
    check_in_english(page.get_by_role("heading", level=1).inner_text(), "待办", catalog)
    tabs = page.locator("nav.inbox-tabs a")
    check_in_english(own_text(tabs.nth(0)), "全部待办", catalog)
    check_in_english(own_text(tabs.nth(2)), "可认领", catalog)
    headers = page.locator("table.inbox-table thead th").all_inner_texts()[1:]
    for shown, chinese in zip(
        headers, ["任务", "阶段", "组织", "期限（北京时间）", "优先级", "操作"], strict=True
    ):
        check_in_english(shown.strip(), chinese, catalog)
    assert page.js_errors == []


def test_a_task_is_claimed_and_released_from_the_inbox(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    engine = engine_of(live_server.app)
    sign_in_as(page, live_server, "chenjing")
    page.locator("nav.sections").get_by_role("link", name="待办").click()
    page.locator("nav.inbox-tabs").get_by_role("link", name="可认领").click()
    row = project_row(page)
    assert row.get_attribute("data-holding") == "candidate"
    task_id = int(row.get_attribute("data-task") or 0)

    row.get_by_role("button", name="认领", exact=True).click()  # htmx swaps just this row
    claimed = page.locator(f"tr[data-task='{task_id}'][data-holding='claimed']")
    claimed.wait_for()
    assert "我已认领" in claimed.inner_text()
    with engine.db.read() as s:
        task = s.get(HumanTask, task_id)
        assert task is not None and s.get(User, task.assignee_id).username == "chenjing"  # type: ignore[union-attr]

    page.locator("nav.inbox-tabs").get_by_role("link", name="我已认领").click()
    mine = page.locator(f"tr[data-task='{task_id}']")
    assert mine.get_attribute("data-holding") == "claimed"
    mine.get_by_role("button", name="放弃认领").click()
    page.locator(f"tr[data-task='{task_id}'][data-holding='candidate']").wait_for()
    with engine.db.read() as s:
        assert s.get(HumanTask, task_id).assignee_id is None  # type: ignore[union-attr]

    # bulk claim: in the claimable list, tick the row, claim the ticked ones
    page.locator("nav.inbox-tabs").get_by_role("link", name="可认领").click()
    page.locator(f"tr[data-task='{task_id}']").get_by_role("checkbox").check()
    page.get_by_role("button", name="认领所选任务").click()
    page.get_by_text("已认领 1 项任务。").wait_for()
    assert page.locator(f"tr[data-task='{task_id}']").count() == 0  # no longer claimable
    page.locator("nav.inbox-tabs").get_by_role("link", name="我已认领").click()

    # the task page tells the same story, and releases it from there too
    page.locator(f"tr[data-task='{task_id}']").get_by_role("link", name=TASK, exact=True).click()
    page.wait_for_url("**/tasks/*")
    assert "陈静 办理中" in page.locator(".task-facts").inner_text()
    page.get_by_role("button", name="放弃认领").click()
    page.get_by_role("button", name="认领此任务").wait_for()
    assert "待认领" in page.locator(".task-facts").inner_text()
    assert page.js_errors == []


def test_a_stale_submit_shows_who_completed_the_task_not_an_error_page(
    page,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
) -> None:
    sign_in_as(page, live_server, "chenjing")
    open_project_task(page)
    other = browser.new_context(locale="zh-CN")
    try:
        sunli = other.new_page()
        sign_in_as(sunli, live_server, "sunli")
        open_project_task(sunli)
        assert sunli.url == page.url  # the same task, open in two people's browsers

        sunli.get_by_label("通过", exact=True).check()
        sunli.get_by_label("审核意见").fill("材料齐全")
        sunli.locator("form.schema-form").get_by_role("button", name="提交", exact=True).click()
        sunli.wait_for_url("**/inbox/**")
    finally:
        other.close()

    page.get_by_label("退回修改").check()
    page.get_by_label("审核意见").fill("请补充经费明细")
    with page.expect_response(lambda r: r.request.method == "POST" and "/tasks/" in r.url) as answer:
        page.locator("form.schema-form").get_by_role("button", name="提交", exact=True).click()
    assert answer.value.status == 409
    notice = page.locator("[data-notice]")
    assert notice.inner_text() == "此任务已由 孙丽 办理完毕，无需再次提交。"
    assert page.get_by_role("heading", level=1).inner_text() == TASK  # still the task page
    assert "已办结" in page.locator(".task-facts").inner_text()
    assert "材料齐全" in page.locator("section.task-done").inner_text()  # what sunli submitted
    # Chromium logs any 4xx page load to the console; the 409 is the answer we expect, nothing else may be.
    expected = "Failed to load resource: the server responded with a status of 409 (CONFLICT)"
    assert [e for e in page.js_errors if e != expected] == []


def test_the_inbox_and_a_task_fit_a_phone_screen(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in_as(page, live_server, "chenjing")
    fits = "document.documentElement.scrollWidth <= window.innerWidth + 1"
    page.locator("nav.sections").get_by_role("link", name="待办").click()
    page.wait_for_url("**/inbox/**")
    assert page.evaluate(fits), page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    project_row(page).get_by_role("link", name=TASK, exact=True).click()
    page.wait_for_url("**/tasks/*")
    page.locator("section.diagram .djs-container").wait_for()  # the diagram is drawn
    assert page.evaluate(fits), page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert page.js_errors == []
