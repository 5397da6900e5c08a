"""The form editor (/designer/forms): rows or JSON, a preview by the task page's macros, saved as the
designer's draft and deployed with the diagram, where deploy checks it like every other form."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from sqlalchemy import select

from engine import Engine
from engine.models import Definition
from tests.helpers import files
from tests.test_designer import APPROVAL, approval_xml, post_json
from tests.web import post, sign_in
from web import form_fields

MIDTERM = {
    "key": "approval",
    "name": "midterm.json",
    "title": "中期检查",
    "rows-0-key": "progress",
    "rows-0-title": "进展评估",
    "rows-0-kind": "choice",
    "rows-0-choices": "超前\n正常\n滞后",
    "rows-0-required": "on",
    "rows-1-key": "score",
    "rows-1-title": "中期得分",
    "rows-1-kind": "number",
    "rows-1-minimum": "0",
    "rows-1-maximum": "100",
    "rows-2-key": "checked_on",
    "rows-2-title": "检查日期",
    "rows-2-kind": "date",
}


@pytest.fixture
def approval(engine: Engine) -> Definition:
    return engine.deploy(files(*APPROVAL), "designer")


def test_rows_and_schema_convert_both_ways_and_nested_forms_stay_json(web_app: Flask) -> None:
    with web_app.test_request_context("/"):  # messages go through gettext
        draft, problems = form_fields.read_posted(MIDTERM)
        schema, invalid = form_fields.schema_of(draft)
    _check_conversion(draft, problems, schema, invalid)


def _check_conversion(draft, problems, schema, invalid) -> None:  # type: ignore[no-untyped-def] = form_fields.read_posted(MIDTERM)
    assert problems == []
    assert invalid == [] and schema is not None
    assert schema["required"] == ["progress"] and schema["properties"]["progress"]["enum"] == [
        "超前",
        "正常",
        "滞后",
    ]
    assert schema["properties"]["score"] == {
        "type": "number",
        "title": "中期得分",
        "minimum": 0,
        "maximum": 100,
    }
    assert form_fields.from_rows(form_fields.to_draft(schema)) == schema  # nothing lost on the way back
    nested = json.loads(files("apply.json")["apply.json"])
    assert form_fields.to_draft(nested).raw is not None  # a list of rows: edited as JSON


def test_the_preview_is_drawn_by_the_task_page_macros_and_mistakes_are_named(
    web_app: Flask, approval: Definition
) -> None:
    client = sign_in(web_app, "designer")
    html = post(client, "/designer/forms/preview", MIDTERM).get_data(as_text=True)
    assert 'name="score"' in html and 'type="date"' in html and "滞后" in html
    wrong = {**MIDTERM, "rows-1-key": "2score", "rows-1-minimum": "九十", "rows-3-key": "progress"}
    html = post(client, "/designer/forms/preview", wrong).get_data(as_text=True)
    assert "2score" in html and "“九十”不是数字" in html and "字段名重复" in html
    raw = post(client, "/designer/forms/preview", {"mode": "raw", "raw": "{not json"}).get_data(as_text=True)
    assert "不是合法的 JSON" in raw


def test_a_saved_form_is_offered_on_tasks_and_deployed_with_the_diagram(
    web_app: Flask, engine: Engine, approval: Definition
) -> None:
    client = sign_in(web_app, "designer")
    refused = post(client, "/designer/forms/save", {**MIDTERM, "title": ""})
    assert refused.status_code == 422 and "表单标题不能为空" in refused.get_data(as_text=True)
    assert 'value="进展评估"' in refused.get_data(as_text=True)  # the input is kept
    assert post(client, "/designer/forms/save", MIDTERM).status_code == 302
    assert "midterm.json" in client.get("/designer/forms/?key=approval").get_data(as_text=True)
    page = client.get("/designer/forms/edit?key=approval&name=midterm.json").get_data(as_text=True)
    assert 'value="进展评估"' in page and "滞后" in page
    assert "midterm.json" in client.get("/designer/edit?key=approval").get_data(as_text=True)

    uses = approval_xml(lambda t: t.replace('value="review.json"', 'value="midterm.json"', 1))
    status, result = post_json(client, "/designer/deploy", {"xml": uses, "key": "approval", "version": 1})
    assert status == 200 and result["version"] == 2, result
    with engine.db.read() as s:
        v2 = s.execute(select(Definition).where(Definition.version == 2)).scalar_one()
        assert json.loads(v2.sources["midterm.json"])["title"] == "中期检查"
    listed = client.get("/designer/forms/?key=approval").get_data(as_text=True)
    assert "midterm.json" in listed and '<span class="tag">草稿</span>' not in listed  # deployed: no draft


def test_only_designers_reach_the_form_editor(web_app: Flask, approval: Definition) -> None:
    for username in ("office", "member1", "outsider"):
        client = sign_in(web_app, username)
        assert client.get("/designer/forms/?key=approval").status_code == 403
        assert client.get("/designer/forms/edit?key=approval&name=apply.json").status_code == 403
        assert post(client, "/designer/forms/save", MIDTERM).status_code == 403
        assert post(client, "/designer/forms/preview", MIDTERM).status_code == 403
    designer = sign_in(web_app, "designer")
    assert designer.get("/designer/forms/edit?key=approval&name=../../etc/passwd").status_code == 404
    assert designer.get("/designer/forms/?key=bad key").status_code == 404
