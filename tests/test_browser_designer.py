"""The process designer in a real browser: the lifecycle opens in the modeler, the panel edits our
extensions, and server validation marks the offending element."""

from __future__ import annotations

from tests.browser import LiveServer, sign_in_as
from tests.lifecycle_helpers import ROOT


def test_lifecycle_opens_in_the_modeler_and_validation_marks_a_broken_task(
    page,
    live_server: LiveServer,  # type: ignore[no-untyped-def]
) -> None:
    sign_in_as(page, live_server, "luoyi")  # the demo's designer
    page.goto(f"{live_server.url}/designer/")
    page.locator("section[aria-labelledby='p-project_lifecycle']").get_by_role(
        "link", name="打开"
    ).first.click()
    page.wait_for_selector("#qz-designer[data-ready='1']")
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
