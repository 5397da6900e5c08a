"""The shell in a real browser: the demo sign-in, the navigation, the language switch."""

from __future__ import annotations

from tests.browser import LiveServer, sign_in_as, sign_out


def test_a_new_user_signs_in_with_a_listed_demo_account_and_switches_language(
    page, live_server: LiveServer  # type: ignore[no-untyped-def]
) -> None:
    page.goto(live_server.url)
    assert "/login" in page.url
    listed = page.locator("dl.accounts-by-role")
    assert "liuyang" in listed.inner_text() and "支部书记" in listed.inner_text()
    password = page.locator("[data-demo-password]").inner_text()

    sign_in_as(page, live_server, "liuyang", password)

    assert page.locator(".who").inner_text() == "刘洋"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    sign_out(page)
    assert page.js_errors == []


def test_a_wrong_password_is_refused_on_the_page(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.url}/login")
    page.get_by_label("用户名").fill("liuyang")
    page.get_by_label("密码").fill("wrong password")
    page.get_by_role("button", name="登录").click()
    assert "用户名或密码不正确" in page.locator("[role=alert]").inner_text()
