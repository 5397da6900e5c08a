"""The process designer in a real browser: the lifecycle opens in the modeler, the panel edits our
extensions, and server validation marks the offending element."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from engine.models import AuditEvent, Definition, Instance
from tests.browser import LiveServer, sign_in_as, sign_out
from tests.lifecycle_helpers import PROCESS as LIFECYCLE
from tests.lifecycle_helpers import ROOT
from web import engine_of


def test_lifecycle_opens_in_the_modeler_and_validation_marks_a_broken_task(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    sign_in_as(page, live_server, "luoyi")  # the demo's designer
    open_lifecycle(page, live_server)
    assert page.locator(".qz-canvas .djs-element").count() > 50  # the lifecycle's shapes are drawn

    page.evaluate(
        "() => { const m = window.qzModeler;"
        " m.get('selection').select(m.get('elementRegistry').get('apply')); }"
    )
    form = page.locator(".qz-panel select")
    assert form.input_value() == "lifecycle_application.json"
    page.get_by_role("button", name="校验").click()
    page.wait_for_selector(".qz-results .qz-ok")
    saved = page.evaluate("() => window.qzModeler.saveXML().then(r => r.xml)")
    original = (ROOT / "workflows" / "project_lifecycle.bpmn").read_text("utf-8")
    for tag in ("spiffworkflow:property ", "spiffworkflow:postScript", "spiffworkflow:calledDecisionId"):
        assert saved.count(f"<{tag}") == original.count(f"<{tag}"), tag  # our extensions round-trip

    xml = "() => window.qzModeler.saveXML().then(r => r.xml)"
    page.get_by_label("表单").select_option("")  # the panel's change is a command: undo restores it
    uses = saved.count("lifecycle_application.json")
    assert page.evaluate(xml).count("lifecycle_application.json") == uses - 1
    page.evaluate("() => window.qzModeler.get('commandStack').undo()")
    restored = page.evaluate(xml)
    assert restored.count("lifecycle_application.json") == uses

    owner = page.get_by_label("办理人表达式")
    owner.fill("__import__('os')")
    owner.dispatch_event("change")
    page.get_by_role("button", name="校验").click()
    page.wait_for_selector(".qz-problems li[data-element='apply']")
    assert page.locator("[data-element-id='apply'].qz-error").count() == 1
    assert page.js_errors == []


def test_palette_speaks_chinese_and_the_panel_edits_decision_references(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    sign_in_as(page, live_server, "luoyi")
    page.goto(f"{live_server.url}/designer/edit?key=project_lifecycle")
    page.wait_for_selector("#qz-designer[data-ready='1']")
    assert page.locator(".djs-palette [aria-label='创建任务']").count() == 1  # translate service override
    assert page.locator(".djs-palette [aria-label='Create task']").count() == 0

    page.evaluate(
        "() => { const m = window.qzModeler;"
        " m.get('selection').select(m.get('elementRegistry').get('decide')); }"
    )
    assert page.locator(".djs-context-pad [title='追加任务']").count() == 1
    decision = page.get_by_label("调用的决策(DMN)")
    assert decision.input_value() == "lifecycle_initiation"
    assert "org_grading_weights" in decision.locator("option").all_inner_texts()
    decision.select_option("lifecycle_acceptance_grade")
    saved = page.evaluate("() => window.qzModeler.saveXML().then(r => r.xml)")
    called = "<spiffworkflow:calledDecisionId>{}</spiffworkflow:calledDecisionId>"
    assert called.format("lifecycle_acceptance_grade") in saved
    assert "lifecycle_initiation<" not in saved
    page.evaluate("() => window.qzModeler.get('commandStack').undo()")
    saved = page.evaluate("() => window.qzModeler.saveXML().then(r => r.xml)")
    assert called.format("lifecycle_initiation") in saved
    assert page.js_errors == []


# The designer's whole change, as the issue puts it: make a form for a mid-term review (中期检查) in the
# form editor, add the step to the control
# stage, see validation refuse a bad due date, fix it, deploy version 2, move the running projects
# onto it after a dry run, and start a project on it. Shapes are placed through the modeler's own
# modeling commands (what the palette's drag-and-drop runs); everything else is clicked.
INSERT_REVIEW = """() => {
  const m = window.qzModeler, registry = m.get('elementRegistry'), modeling = m.get('modeling');
  const flow = registry.get('s4_f5'), before = flow.source, after = flow.target;
  // beside the office's check, in the office's lane
  const at = {x: after.x + after.width * 1.5 + 40, y: after.y + after.height / 2};
  const review = modeling.createShape({type: 'bpmn:UserTask'}, at, after.parent);
  modeling.removeConnection(flow);
  modeling.connect(before, review);
  modeling.connect(review, after);
  modeling.updateLabel(review, '中期检查');
  m.get('selection').select(review);
  return review.id;
}"""


def _start_form(page, server: LiveServer, name: str, title: str) -> None:  # type: ignore[no-untyped-def]
    """From the version list, start a new lifecycle form in the form editor and give it a title."""
    page.goto(f"{server.url}/designer/")
    page.locator("section[aria-labelledby='p-project_lifecycle']").get_by_role(
        "link", name="编辑表单"
    ).click()
    page.get_by_label("新表单文件名").fill(name)
    page.get_by_role("button", name="新建表单").click()
    page.get_by_label("表单标题").fill(title)


def _field(page, number: int, key: str, label: str | None = None, kind: str | None = None) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label(f"第 {number} 个字段的字段名").fill(key)
    if label is not None:
        page.get_by_label(f"第 {number} 个字段的标题").fill(label)
    if kind is not None:
        page.get_by_label(f"第 {number} 个字段的类型").select_option(kind)


def _save_form(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("button", name="保存表单").click()
    assert "已保存到草稿" in page.locator("main").inner_text()


def _new_form(page, server: LiveServer, name: str, title: str, fields: list[tuple[str, str, str]]) -> None:  # type: ignore[no-untyped-def]
    """Make a form in the form editor, as a designer does from the version list."""
    _start_form(page, server, name, title)
    for number, (key, label, kind) in enumerate(fields, start=1):
        _field(page, number, key, label, kind)
    _save_form(page)


def open_lifecycle(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """From the version list, open the lifecycle's newest version in the modeler and wait for it."""
    page.goto(f"{server.url}/designer/")
    page.locator("section[aria-labelledby='p-project_lifecycle']").get_by_role(
        "link", name="打开"
    ).first.click()
    page.wait_for_selector("#qz-designer[data-ready='1']")


def _panel_input(page, label: str, value: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(".qz-panel").get_by_label(label)
    box.fill(value)
    box.dispatch_event("change")


def test_a_designer_adds_a_review_step_deploys_it_and_moves_the_running_projects(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    engine = engine_of(live_server.app)
    with engine.db.read() as s:
        running = {
            i.id for i in s.execute(select(Instance).where(Instance.process_key == LIFECYCLE)).scalars()
        }
    sign_in_as(page, live_server, "luoyi")
    fields = [("midterm_score", "中期得分", "number"), ("checked_on", "检查日期", "date")]
    _new_form(page, live_server, "lifecycle_midterm.json", "中期检查", fields)
    open_lifecycle(page, live_server)

    review = page.evaluate(INSERT_REVIEW)
    page.locator(".qz-panel").get_by_label("表单").select_option("lifecycle_midterm.json")  # the new form
    _panel_input(page, "办理期限表达式", '"P7D')  # the closing quote forgotten: validation must say so
    page.get_by_role("button", name="校验").click()
    page.wait_for_selector(f".qz-problems li[data-element='{review}']")
    assert page.locator(f"[data-element-id='{review}'].qz-error").count() == 1
    _panel_input(page, "办理期限表达式", '"P7D"')
    page.get_by_role("button", name="校验").click()
    page.wait_for_selector(".qz-results .qz-ok")
    page.once("dialog", lambda dialog: dialog.accept())  # 确认部署为新版本?
    page.get_by_role("button", name="部署为新版本").click()
    page.wait_for_selector(".qz-results .qz-ok:has-text('已部署 project_lifecycle 第 2 版')")

    page.goto(f"{live_server.url}/designer/")
    page.get_by_role("link", name="迁移 v1 → v2").click()
    rows = page.locator("tbody tr")
    assert rows.count() == len(running) and page.locator("tr.qz-blocked").count() == 0
    page.get_by_role("button", name=re.compile("迁移全部可迁移的实例")).click()
    page.wait_for_selector("[role=status], .flash")
    assert f"已迁移 {len(running)} 个实例" in page.locator("main").inner_text()
    sign_out(page)

    sign_in_as(page, live_server, "liuyang")  # a secretary starts a new project: it runs on v2
    page.goto(f"{live_server.url}/instances/new")
    start = page.locator("section.start-process")
    start.get_by_label(re.compile("^流程")).select_option(LIFECYCLE)
    start.get_by_label(re.compile("^组织")).select_option(label="机关党支部")
    start.get_by_label(re.compile("^标题")).fill("中期检查试点项目")
    start.get_by_role("button", name="发起", exact=True).click()
    page.wait_for_url("**/tasks/*")

    with engine.db.read() as s:
        versions = dict(
            s.execute(
                select(Instance.id, Definition.version)
                .join(Definition, Definition.id == Instance.definition_id)
                .where(Instance.process_key == LIFECYCLE)
            ).all()
        )
        trail = [a for a in s.execute(select(AuditEvent.action).where(AuditEvent.actor == "luoyi")).scalars()]
    assert set(versions.values()) == {2} and len(versions) == len(running) + 1
    with engine.db.read() as s:
        deployed = s.execute(
            select(Definition.sources).where(Definition.process_key == LIFECYCLE, Definition.version == 2)
        ).scalar_one()
    assert json.loads(deployed["lifecycle_midterm.json"])["properties"]["midterm_score"]["type"] == "number"
    lanes = re.findall(r'<bpmn:lane id="[^"]+" name="([^"]+)">(.*?)</bpmn:lane>', str(deployed), re.S)
    assert [name for name, refs in lanes if f">{review}<" in refs] == ["party_office"]  # placed in its lane
    assert trail.count("instance.migrated") == len(running) and "definition.deployed" in trail
    assert page.js_errors == []


def test_a_designer_builds_a_form_and_watches_the_preview_follow(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    sign_in_as(page, live_server, "luoyi")
    _start_form(page, live_server, "lifecycle_midterm.json", "中期检查")
    _field(page, 1, "midterm_score", "中期得分", "number")  # a change: htmx redraws the preview
    preview = page.locator("#qz-preview")
    preview.get_by_label("中期得分").wait_for()
    assert preview.locator("input[name='midterm_score']").get_attribute("type") == "number"
    _field(page, 2, "midterm_score", kind="date")  # the same name twice
    preview.get_by_text("midterm_score:字段名重复").wait_for()
    _field(page, 2, "checked_on", "检查日期")
    _save_form(page)
    assert page.get_by_label("第 2 个字段的字段名").input_value() == "checked_on"
    assert page.js_errors == []
