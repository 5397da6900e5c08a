"""Deployment: content-hash versions, and one error listing every problem with nothing stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from engine import BundleInvalid, Engine
from engine.models import AuditEvent, Definition
from tests.conftest import FIXTURES
from tests.helpers import actions, files, only_task

APPROVAL = ("approval.bpmn", "apply.json", "review.json")


def count(engine: Engine, model: type) -> int:
    with engine.db.read() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_same_content_same_version_changed_content_next_version(engine: Engine) -> None:
    first = engine.deploy(files(*APPROVAL), "designer")
    again = engine.deploy(files(*reversed(APPROVAL)), "designer")  # order does not matter
    assert (again.id, again.version) == (first.id, 1)

    running = engine.start("approval", "sec1", "B1")
    changed = files(*APPROVAL)
    changed["approval.bpmn"] = changed["approval.bpmn"].replace(
        "填写申报书".encode(), "填写项目申报书".encode()
    )
    second = engine.deploy(changed, "designer")
    assert second.version == 2 and second.id != first.id

    # the running instance keeps version 1; a new one gets version 2
    assert only_task(engine, "sec1").title == "填写申报书"
    engine.start("approval", "sec2", "B2")
    assert only_task(engine, "sec2").title == "填写项目申报书"
    assert running.definition_id == first.id
    assert actions(engine).count("definition.deployed") == 2


def test_every_problem_is_listed_with_file_and_element_and_nothing_is_stored(engine: Engine) -> None:
    bad = FIXTURES / "bad"
    bundle = {p.name: p.read_bytes() for p in bad.iterdir()}
    events_before = count(engine, AuditEvent)
    with pytest.raises(BundleInvalid) as caught:
        engine.deploy(bundle, "designer", process_key="broken")
    found = {(p.file, p.element): p.message for p in caught.value.problems}
    text = "\n".join(str(p) for p in caught.value.problems)

    assert ("broken.bpmn", "fill") in found and "missing.json" in found[("broken.bpmn", "fill")]
    assert ("broken.bpmn", "evil") in found and "import" in found[("broken.bpmn", "evil")].lower()
    assert "without condition" in found[("broken.bpmn", "f_b")]
    assert "every condition" in found[("decide.bpmn", "choose")]
    assert any(p.file == "malformed.bpmn" for p in caught.value.problems)
    assert any(p.file == "xxe.bpmn" for p in caught.value.problems)
    assert any(p.file == "badform.json" for p in caught.value.problems)
    assert "no_such_decision" in text
    assert "output item 'signature'" in found[("mi_no_output.bpmn", "sign_all")]
    assert count(engine, Definition) == 0
    assert count(engine, AuditEvent) == events_before


def test_only_designers_deploy(engine: Engine) -> None:
    from engine import Forbidden

    with pytest.raises(Forbidden, match="designer"):
        engine.deploy(files(*APPROVAL), "sec1")
    assert count(engine, Definition) == 0


def test_a_bundle_without_bpmn_is_refused(engine: Engine) -> None:
    with pytest.raises(BundleInvalid, match="no BPMN"):
        engine.deploy(files("apply.json"), "designer")


def test_billion_laughs_is_refused_before_spiffworkflow_sees_it(engine: Engine) -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">'
        '<bpmn:process id="p" name="&lol3;" isExecutable="true"/></bpmn:definitions>'
    )
    with pytest.raises(BundleInvalid) as caught:
        engine.deploy({"laughs.bpmn": laughs}, "designer")
    assert caught.value.problems[0].file == "laughs.bpmn"
    assert count(engine, Definition) == 0
