"""Browser tests: Playwright driving Debian's Chromium against the app served on a real port.

Chromium is never downloaded: it is ``/usr/bin/chromium`` (the test command installs it with apt
when ``CI=true``). Without it these tests skip and say why. A failing test leaves a full-page
screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from engine import Database
from tests.web import make_app
from web import engine_of
from web.demo import DEMO_PASSWORD, load_demo

CHROMIUM = os.environ.get("QIZHI_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Flags for a headless Chromium on a machine with no outside network (see the machine's notes).
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class LiveServer:
    url: str
    app: Flask


@pytest.fixture
def live_server(db: Database, tmp_path: Path) -> Iterator[LiveServer]:
    """The product as ``make run`` serves it: demo mode, demo data, on a free local port."""
    app = make_app(db, tmp_path, QIZHI_DEMO="1")
    load_demo(engine_of(app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveServer(f"http://127.0.0.1:{server.server_port}", app)
    server.shutdown()
    thread.join(5)
    engine_of(app).db.dispose()


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}; `CI=true make test` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda err: errors.append(str(err)))
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    opened.js_errors = errors  # type: ignore[attr-defined]
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def sign_in_as(page, server: LiveServer, username: str, password: str = DEMO_PASSWORD) -> None:  # type: ignore[no-untyped-def]
    """Sign in through the sign-in page, as a person would."""
    page.goto(f"{server.url}/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(lambda url: "/login" not in url)


def sign_in_at(page, server: LiveServer, username: str, url: str) -> None:  # type: ignore[no-untyped-def]
    """Follow a link to ``url`` while signed out: sign in on the page it leads to and land on ``url``."""
    page.goto(url)
    page.wait_for_url("**/login?next=*")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(lambda now: now.split("?")[0] == url.split("?")[0])


def sign_out(page) -> None:  # type: ignore[no-untyped-def]
    page.locator("form[action='/logout'] button").click()
    page.wait_for_url("**/login")


def open_instance(page, title: str) -> None:  # type: ignore[no-untyped-def]
    """Find an instance by its title in the instance list (流程实例) and open it, as a person would."""
    page.locator("nav.sections").get_by_role("link", name="流程实例").click()
    page.get_by_label("标题包含").fill(title)
    page.get_by_role("button", name="筛选").click()
    page.get_by_role("link", name=title, exact=True).click()
    page.wait_for_url("**/instances/*")


def submit_task(page) -> None:  # type: ignore[no-untyped-def]
    """Submit the task form; a good submission goes back to the inbox with a note."""
    with page.expect_navigation():
        page.locator("form.schema-form").get_by_role("button", name="提交", exact=True).click()
    if "/inbox" not in page.url:  # refused: say what the page said, not just "timed out"
        shown = page.locator("[role=alert]").all_inner_texts()
        raise AssertionError(f"the task was not accepted ({page.url}): {shown}")


def at_stage(page, stage: str) -> None:  # type: ignore[no-untyped-def]
    """The instance page shows ``stage`` as the current stage, in its facts and its progress bar."""
    assert page.locator("dd[data-stage]").get_attribute("data-stage") == stage
    assert page.locator("ol.stage-progress li[aria-current=step]").get_attribute("data-stage") == stage


def take(page, server: LiveServer, user: str, instance_url: str, stage: str, task: str) -> None:  # type: ignore[no-untyped-def]
    """``user`` follows a link to the instance, sees it at ``stage`` with ``task`` open, and opens it."""
    sign_in_at(page, server, user, instance_url)
    at_stage(page, stage)
    page.locator("section.open-tasks").get_by_role("link", name=task, exact=True).click()
    page.wait_for_url("**/tasks/*")
    assert page.get_by_role("heading", level=1).inner_text() == task


def list_row(page, field: str, i: int):  # type: ignore[no-untyped-def]
    """Row ``i`` of a list field, added with its 添加一项 button when not there yet, as a person would."""
    box = page.locator(f"fieldset[data-rows='{field}']")
    rows = box.locator("[data-row]")
    if rows.count() <= i:
        box.get_by_role("button", name="添加一项").click()
    return rows.nth(i)


def fill_list(page, field: str, values: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Fill a list field of plain values row by row."""
    for i, text in enumerate(values):
        list_row(page, field, i).get_by_label(f"第 {i + 1} 项", exact=True).fill(text)
