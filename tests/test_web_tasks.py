"""The task page: forms drawn from the real forms/*.json, read back, validated, completed; who may see it.

Deploys the real processes (workflows/ + forms/) as tests/test_lifecycle.py and
tests/test_pledge_cycle.py do, and drives them through the web as their people would.
"""

from __future__ import annotations

import io
import json
import re
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string
from sqlalchemy import update
from werkzeug.datastructures import MultiDict

from engine import Engine
from engine.directory import add_user, grant
from engine.forms import validate
from engine.models import HumanTask, Instance
from tests.helpers import only_task
from tests.lifecycle_helpers import PROCESS, lifecycle_files
from tests.test_lifecycle import JUDGES, application, do, sheet
from tests.test_pledge_cycle import PLEDGES, pledge_files, start_year
from tests.web import post, sign_in
from web import formrender

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lifecycle(engine: Engine) -> Engine:
    """The real project lifecycle deployed, with five judges (as tests/test_lifecycle.py has)."""
    with engine.db.write() as s:
        for name in ("judge4", "judge5"):
            add_user(s, name, f"评委{name[-1]}")
            grant(s, name, "HQ", "review_committee")
    engine.deploy(lifecycle_files(), "designer", PROCESS)
    return engine


@pytest.fixture
def pledge(engine: Engine) -> Engine:
    """The real pledge cycle deployed."""
    engine.deploy(pledge_files(), "designer", "pledge_cycle")
    return engine


FORMS = sorted((ROOT / "forms").glob("*.json"))
TODAY = date.today().isoformat()


# --- a browser's view of a form ---------------------------------------------------------------------


class _FormReader(HTMLParser):
    """What a browser would submit from the first ``<form>`` matching ``css_class``: checked boxes,
    selected options, text of textareas; nothing inside ``<template>``, no buttons, no file inputs."""

    def __init__(self, css_class: str) -> None:
        super().__init__(convert_charrefs=True)
        self.css_class = css_class
        self.pairs: list[tuple[str, str]] = []
        self.in_form = False
        self.done = False
        self.template = 0
        self.select: str | None = None
        self.options: list[tuple[str, bool]] = []
        self.textarea: str | None = None
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.done and self.css_class in a.get("class", "").split():
            self.in_form = True
        if not self.in_form:
            return
        if tag == "template":
            self.template += 1
        if self.template:
            return
        if tag == "input" and "name" in a:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.pairs.append((a["name"], a.get("value", "on")))
            elif kind not in ("file", "submit", "button"):
                self.pairs.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self.select, self.options = a.get("name"), []
        elif tag == "option" and self.select is not None:
            self.options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea":
            self.textarea, self.text = a.get("name"), ""

    def handle_endtag(self, tag: str) -> None:
        if not self.in_form:
            return
        if tag == "template":
            self.template -= 1
        elif tag == "form":
            self.in_form, self.done = False, True
        elif self.template:
            return
        elif tag == "select" and self.select:
            chosen = [v for v, sel in self.options if sel] or [v for v, _ in self.options[:1]]
            self.pairs.append((self.select, chosen[0] if chosen else ""))
            self.select = None
        elif tag == "textarea" and self.textarea:
            self.pairs.append((self.textarea, self.text.removeprefix("\n")))
            self.textarea = None

    def handle_data(self, data: str) -> None:
        if self.textarea is not None and not self.template:
            self.text += data


def browser_form(html: str, css_class: str = "schema-form") -> MultiDict[str, str]:
    reader = _FormReader(css_class)
    reader.feed(html)
    assert reader.done, f"no <form class={css_class}> on the page"
    return MultiDict(reader.pairs)


def submit_as_browser(client, url: str, html: str, changes: dict[str, str] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    """Post the page's form as a browser would, with some fields changed."""
    form = browser_form(html)
    for key, value in (changes or {}).items():
        form.setlist(key, [value])
    return client.post(url, data=form, **kw)


# --- typical valid data for any form, made from its schema ------------------------------------------


def typical(prop: dict[str, Any], index: int = 0) -> Any:
    """A value a careful person would enter: every field filled, within every limit."""
    kind = prop.get("type")
    if "const" in prop:
        return prop["const"]
    if "enum" in prop:
        return prop["enum"][index % len(prop["enum"])]
    if kind == "object":
        return {k: typical(v, index) for k, v in (prop.get("properties") or {}).items()}
    if kind == "array":
        count = max(int(prop.get("minItems") or 0), 2)
        count = min(count, int(prop.get("maxItems") or count))
        return [typical(prop.get("items") or {}, i) for i in range(count)]
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        low, high = prop.get("minimum", 0), prop.get("maximum", 100)
        value = min(max(low, 1 + index), high)
        return int(value) if kind == "integer" else value + (0.5 if value + 0.5 <= high else 0)
    if prop.get("format") == "date":
        return (date.today() + timedelta(days=index)).isoformat()
    if prop.get("format") == "attachment":
        return formrender.attachment_ref(7 + index, f"佐证材料{index + 1}.pdf")
    text = f"示例内容{index + 1}" + "。" * max(0, int(prop.get("minLength") or 0) - 5)
    return text[: int(prop.get("maxLength") or len(text))]


FORM_PAGE = """{% from "forms/fields.html" import form_body with context %}
<form class="schema-form">{{ form_body(schema, values, errors, rows) }}</form>"""


@pytest.mark.parametrize("path", FORMS, ids=[p.name for p in FORMS])
def test_every_real_form_renders_and_a_typical_submission_reads_back_the_same(
    web_app: Flask, path: Path
) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    data = validate(schema, {k: typical(v) for k, v in schema["properties"].items()})

    with web_app.test_request_context("/"):
        html = render_template_string(FORM_PAGE, schema=schema, values=data, errors={}, rows={})
    kinds = {formrender.field_kind(p) for p in schema["properties"].values()}
    parsed = formrender.parse(schema, browser_form(html), MultiDict())

    assert parsed.errors == {} and parsed.uploads == []
    assert validate(schema, parsed.data) == data, f"{path.name} did not read back; widgets {kinds}"
    for name in schema["properties"]:
        assert f'data-field="{name}"' in html
    if schema.get("title"):
        assert schema["properties"]  # every form has fields to draw


def test_each_schema_type_gets_its_widget(web_app: Flask) -> None:
    schema = {
        "type": "object",
        "properties": {
            "short": {"type": "string", "maxLength": 50, "title": "短"},
            "long": {"type": "string", "maxLength": 2000},
            "when": {"type": "string", "format": "date"},
            "count": {"type": "integer", "minimum": 0},
            "score": {"type": "number", "maximum": 25},
            "pick": {"type": "string", "enum": ["approve", "return"]},
            "many": {"type": "string", "enum": ["学习", "工作", "自律", "服务", "其他"]},
            "agree": {"type": "boolean", "const": True},
            "ok": {"type": "boolean"},
            "file": {"type": "string", "format": "attachment"},
        },
    }
    with web_app.test_request_context("/"):
        html = render_template_string(FORM_PAGE, schema=schema, values={}, errors={}, rows={})
    assert re.search(r'<input id="f-short" name="short" type="text"[^>]*maxlength="50"', html)
    assert '<textarea id="f-long" name="long"' in html
    assert 'name="when" type="date"' in html
    assert re.search(r'name="count" value="" type="number" step="1" min="0"', html)
    assert re.search(r'name="score" value="" type="number" step="any" max="25"', html)
    assert 'type="radio" name="pick" value="approve"> 通过</label>' in html  # codes read as words
    assert 'value="return"> 退回修改</label>' in html
    assert '<select id="f-many" name="many"' in html and "请选择" in html
    assert 'type="checkbox" id="f-agree" name="agree" value="true"' in html
    assert 'name="ok" value="true"' in html and 'name="ok" value="false"' in html
    assert 'name="file" type="file"' in html and 'accept=".pdf,' in html


def test_values_are_typed_per_schema_and_unreadable_input_is_kept_with_a_message() -> None:
    schema = json.loads((ROOT / "forms" / "lifecycle_survey.json").read_text(encoding="utf-8"))
    form = MultiDict(
        {"questionnaire_score": "88.5", "questionnaire_respondents": "3.5", "democratic_score": "90"}
    )
    parsed = formrender.parse(schema, form, MultiDict())
    assert parsed.data == {
        "questionnaire_score": 88.5,
        "questionnaire_respondents": "3.5",
        "democratic_score": 90,
    }
    assert parsed.errors == {"questionnaire_respondents": ["请输入整数"]}


def test_rows_are_read_in_order_blank_rows_dropped_and_gaps_closed() -> None:
    schema = json.loads((ROOT / "forms" / "pledge_commit.json").read_text(encoding="utf-8"))
    form = MultiDict(
        [
            ("pledges-rows", "4"),
            ("pledges-5-category", "服务"),
            ("pledges-5-target", "结对帮扶"),
            ("pledges-0-category", "学习"),
            ("pledges-0-target", "自学党章"),
            ("pledges-2-category", ""),
            ("pledges-2-target", "  "),
        ]
    )
    parsed = formrender.parse(schema, form, MultiDict())
    assert parsed.data["pledges"] == [
        {"category": "学习", "target": "自学党章"},
        {"category": "服务", "target": "结对帮扶"},
    ]
    assert parsed.rows["pledges"] == 4


# --- the page, on the real processes ---------------------------------------------------------------


def task_of(engine: Engine, user: str, spec: str) -> HumanTask:
    return only_task(engine, user, spec)


def application_form(html: str) -> MultiDict[str, str]:
    """The application page's form, filled in as tests/test_lifecycle.py's application() says."""
    wanted = application()
    form = browser_form(html)
    changes = {
        "title": str(wanted["title"]),
        "project_type": str(wanted["project_type"]),
        "problems-0": "青年职工安全意识薄弱",
        "problems-1": "班组学习形式单一",
        "problems-rows": "2",
        "goals": str(wanted["goals"]),
        "measures": str(wanted["measures"]),
        "budget": "20000",
        "period_start": str(wanted["period_start"]),
        "period_end": str(wanted["period_end"]),
    }
    for key, value in changes.items():
        form.setlist(key, [value])
    return form


def test_the_application_is_drawn_prefilled_and_submitted_through_the_web(
    lifecycle: Engine, web_app: Flask
) -> None:
    inst = lifecycle.start("project_lifecycle", "sec1", "B1", {"title": "平安“365”安全管控机制"})
    apply = task_of(lifecycle, "sec1", "apply")
    client = sign_in(web_app, "sec1")

    page = client.get(f"/tasks/{apply.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "党建项目申报书" in html and "支部书记填写项目申报书" in html  # form title and instructions
    assert 'value="平安“365”安全管控机制"' in html  # the instance's data prefills the form
    assert 'name="control_period" value="P30D" checked' in html  # a default prefills too
    assert 'name="revision" value="' in html and "计划立项" in html

    form = application_form(html)
    done = client.post(f"/tasks/{apply.id}", data=form)

    assert done.status_code == 302 and done.headers["Location"] == "/inbox/"
    data = lifecycle.instance(inst.id).data
    assert data["problems"] == ["青年职工安全意识薄弱", "班组学习形式单一"] and data["budget"] == 20000
    assert data["control_period"] == "P30D"
    inbox = client.get("/inbox/").get_data(as_text=True)
    assert "已提交“填写项目申报书”" in inbox and f'href="/tasks/{apply.id}"' not in inbox


def test_validation_errors_are_shown_beside_each_field_with_the_input_kept(
    lifecycle: Engine, web_app: Flask
) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    apply = task_of(lifecycle, "sec1", "apply")
    client = sign_in(web_app, "sec1")
    form = {
        "title": "我的项目",
        "project_type": "其他",
        "goals": "目标写在这里",
        "budget": "两万",
        "period_start": "2026-02-30",
        "problems-rows": "1",
    }

    page = post(client, f"/tasks/{apply.id}", form)

    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert 'value="我的项目"' in html and "目标写在这里" in html and 'value="两万"' in html
    errors = dict(re.findall(r'id="f-([\w-]+)-error" role="alert">([^<]+)<', html))
    assert errors["budget"] == "请输入数字"
    assert errors["project_type"] == "请从选项中选择"
    assert errors["problems"] == "至少填写 1 项"
    assert errors["measures"] == "必填" and errors["period_end"] == "必填"
    assert errors["period_start"] == "请输入有效日期（年-月-日）"
    assert "表单有" in html
    assert task_of(lifecycle, "sec1", "apply").id == apply.id  # nothing was completed


def test_pledges_rows_are_added_and_removed_without_script_then_submitted(
    pledge: Engine, web_app: Flask
) -> None:
    [inst_id] = [
        i for i in start_year(pledge, "B1", 2026, "sec1") if pledge.instance(i).data["member"] == "member1"
    ]
    commit = task_of(pledge, "member1", "ut_commit")
    client = sign_in(web_app, "member1")
    html = client.get(f"/tasks/{commit.id}").get_data(as_text=True)
    assert len(re.findall(r'data-row="pledges-\d', html)) == 2  # minItems rows to start with
    assert '<template data-row-template="pledges">' in html

    form = browser_form(html)
    for i, item in enumerate(PLEDGES[:2]):
        for key, value in item.items():
            form.setlist(f"pledges-{i}-{key}", [value])
    form.setlist("_add", ["pledges"])
    more = client.post(f"/tasks/{commit.id}", data=form)
    html = more.get_data(as_text=True)
    assert more.status_code == 200 and len(re.findall(r'data-row="pledges-\d', html)) == 3
    assert "全年自学党章党规 12 次</textarea>" in html  # what was typed survives the redraw

    form = browser_form(html)
    for key, value in PLEDGES[2].items():
        form.setlist(f"pledges-2-{key}", [value])
    done = client.post(f"/tasks/{commit.id}", data=form)
    assert done.status_code == 302
    assert [p["target"] for p in pledge.instance(inst_id).data["pledges"]] == [p["target"] for p in PLEDGES]

    review = task_of(pledge, "sec1", "ut_review")
    secretary = sign_in(web_app, "sec1")
    form = browser_form(secretary.get(f"/tasks/{review.id}").get_data(as_text=True))
    form.setlist("_remove", ["pledge_comments-1"])
    fewer = secretary.post(f"/tasks/{review.id}", data=form).get_data(as_text=True)
    assert len(re.findall(r'data-row="pledge_comments-\d', fewer)) == 2  # never fewer than minItems


def test_a_task_completed_meanwhile_gives_a_friendly_409_naming_who_did_it(
    lifecycle: Engine, web_app: Flask
) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    do(lifecycle, "sec1", "apply", application())
    check = task_of(lifecycle, "office", "check")
    client = sign_in(web_app, "office")
    html = client.get(f"/tasks/{check.id}").get_data(as_text=True)

    first = submit_as_browser(client, f"/tasks/{check.id}", html, {"verdict": "approve"})
    again = submit_as_browser(client, f"/tasks/{check.id}", html, {"verdict": "approve"})

    assert first.status_code == 302
    text = again.get_data(as_text=True)
    assert again.status_code == 409 and "已由 党建工作部 办理完毕" in text and "Traceback" not in text
    shown = client.get(f"/tasks/{check.id}").get_data(as_text=True)
    assert "办理结果" in shown and "通过" in shown and 'class="schema-form"' not in shown


def test_a_stale_page_keeps_the_input_and_goes_through_on_the_second_submit(
    lifecycle: Engine, web_app: Flask
) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    do(lifecycle, "sec1", "apply", application())
    do(lifecycle, "office", "check", {"verdict": "approve"})
    do(lifecycle, "office", "convene", {"meeting_date": TODAY, "judges": JUDGES})
    mine = task_of(lifecycle, "judge1", "score")
    client = sign_in(web_app, "judge1")
    html = client.get(f"/tasks/{mine.id}").get_data(as_text=True)

    do(lifecycle, "judge2", "score", sheet(70))  # the instance moves on meanwhile
    scores = {
        "score_sheet-plan_quality": "25",
        "score_sheet-track_record": "24",
        "score_sheet-credibility": "23",
        "score_sheet-capability": "22",
        "comment": "方案扎实",
    }
    stale = submit_as_browser(client, f"/tasks/{mine.id}", html, scores)

    text = stale.get_data(as_text=True)
    assert stale.status_code == 409 and "已有更新" in text and "方案扎实" in text and 'value="24"' in text
    again = submit_as_browser(client, f"/tasks/{mine.id}", text)
    assert again.status_code == 302
    assert lifecycle.inbox("judge1") == []


def test_one_judge_never_sees_another_judges_scores_prefilled(lifecycle: Engine, web_app: Flask) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    do(lifecycle, "sec1", "apply", application())
    do(lifecycle, "office", "check", {"verdict": "approve"})
    do(lifecycle, "office", "convene", {"meeting_date": TODAY, "judges": JUDGES})
    do(lifecycle, "judge1", "score", {**sheet(77), "comment": "评委一的意见"})
    second = task_of(lifecycle, "judge2", "score")

    html = sign_in(web_app, "judge2").get(f"/tasks/{second.id}").get_data(as_text=True)

    assert "评委一的意见" not in html
    assert 'name="score_sheet-capability" value="" type="number"' in html


def test_only_people_who_may_act_or_see_get_the_page(lifecycle: Engine, web_app: Flask) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    apply = task_of(lifecycle, "sec1", "apply")
    url = f"/tasks/{apply.id}"

    for stranger in ("sec2", "member3", "outsider"):
        client = sign_in(web_app, stranger)
        assert client.get(url).status_code == 404, stranger
        assert post(client, url, {"title": "x"}).status_code == 404, stranger
    assert sign_in(web_app, "sec1").get("/tasks/999999").status_code == 404

    overseer = sign_in(web_app, "secretary")  # the committee above B1 sees it, may not act on it
    page = overseer.get(url)
    assert page.status_code == 200 and "可以查看但不能办理" in page.get_data(as_text=True)
    assert 'class="schema-form"' not in page.get_data(as_text=True)
    assert post(overseer, url, {"title": "x"}).status_code == 403
    assert task_of(lifecycle, "sec1", "apply").state == "open"


def test_a_candidate_may_claim_from_the_task_page_and_release_it(lifecycle: Engine, web_app: Flask) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    do(lifecycle, "sec1", "apply", application())
    check = task_of(lifecycle, "office", "check")
    client = sign_in(web_app, "office")
    assert "认领此任务" in client.get(f"/tasks/{check.id}").get_data(as_text=True)

    claimed = post(client, f"/inbox/tasks/{check.id}/claim", {"next": f"/tasks/{check.id}"})

    assert claimed.status_code == 302 and claimed.headers["Location"] == f"/tasks/{check.id}"
    page = client.get(f"/tasks/{check.id}").get_data(as_text=True)
    assert "放弃认领" in page and "党建工作部 办理中" in page


def test_a_form_post_without_the_csrf_token_is_refused(lifecycle: Engine, web_app: Flask) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    apply = task_of(lifecycle, "sec1", "apply")
    client = sign_in(web_app, "sec1")

    refused = client.post(f"/tasks/{apply.id}", data={"title": "x"})

    assert refused.status_code == 400 and "页面已过期" in refused.get_data(as_text=True)
    assert task_of(lifecycle, "sec1", "apply").state == "open"


def test_the_page_shows_the_diagram_and_history_partials(lifecycle: Engine, web_app: Flask) -> None:
    lifecycle.start("project_lifecycle", "sec1", "B1")
    apply = task_of(lifecycle, "sec1", "apply")

    html = sign_in(web_app, "sec1").get(f"/tasks/{apply.id}").get_data(as_text=True)

    if web_app.jinja_env.loader and "diagram/_viewer.html" in web_app.jinja_env.list_templates():
        assert 'data-active="apply"' in html
    if "instances/_timeline.html" in web_app.jinja_env.list_templates():
        assert 'data-action="instance.started"' in html


# --- end to end -------------------------------------------------------------------------------------


def test_a_pledge_is_committed_reviewed_and_published_through_the_web(pledge: Engine, web_app: Flask) -> None:
    ids = start_year(pledge, "B1", 2026, "sec1")
    [inst_id] = [i for i in ids if pledge.instance(i).data["member"] == "member1"]
    member, secretary = sign_in(web_app, "member1"), sign_in(web_app, "sec1")

    commit = task_of(pledge, "member1", "ut_commit")
    html = member.get(f"/tasks/{commit.id}").get_data(as_text=True)
    changes = {f"pledges-{i}-{k}": v for i, p in enumerate(PLEDGES[:2]) for k, v in p.items()}
    assert submit_as_browser(member, f"/tasks/{commit.id}", html, changes).status_code == 302

    review = [t for t in pledge.inbox("sec1") if t.task_spec == "ut_review" and t.instance_id == inst_id][0]
    html = secretary.get(f"/tasks/{review.id}").get_data(as_text=True)
    material = html.split('class="task-material"')[1].split("</section>")[0]
    assert "承诺事项" in material and "全年自学党章党规 12 次" in material  # what is under review
    assert "修改说明" not in material  # nothing empty, and no bookkeeping ("peers", "quarters")
    assert "互评" not in material and "quarters" not in material
    changes = {"review_verdict": "approve", "pledge_comments-0": "同意", "pledge_comments-1": "可行"}
    assert submit_as_browser(secretary, f"/tasks/{review.id}", html, changes).status_code == 302

    data = pledge.instance(inst_id).data
    assert data["review_verdict"] == "approve" and data["pledge_comments"] == ["同意", "可行"]
    assert pledge.instance(inst_id).stage == "挂牌亮诺"


def test_a_quarterly_report_carries_evidence_files_in_its_rows(pledge: Engine, web_app: Flask) -> None:
    from tests.helpers import later
    from tests.test_pledge_cycle import commit_and_approve, publish

    ids = start_year(pledge, "B1", 2026, "sec1")
    [inst_id] = [i for i in ids if pledge.instance(i).data["member"] == "member1"]
    commit_and_approve(pledge, inst_id)
    publish(pledge, inst_id)
    assert pledge.run_due_jobs(later(91)) >= 1
    report = task_of(pledge, "member1", "ut_report")
    member = sign_in(web_app, "member1")
    html = member.get(f"/tasks/{report.id}").get_data(as_text=True)
    assert 'name="progress-0-evidence" type="file"' in html and "progress-__i__-evidence" in html

    form = browser_form(html)
    for key, value in {
        "progress-0-pledge": "1",
        "progress-0-status": "推进中",
        "progress-0-note": "已学 3 次",
    }.items():
        form.setlist(key, [value])
    form.add("progress-0-evidence", (io.BytesIO(b"%PDF-1.4 notes"), "学习笔记.pdf"))
    done = member.post(f"/tasks/{report.id}", data=form, content_type="multipart/form-data")

    assert done.status_code == 302
    [row] = pledge.instance(inst_id).data["progress"]
    ref = formrender.parse_ref(row["evidence"][0])
    assert row["pledge"] == 1 and ref is not None and ref[1] == "学习笔记.pdf"
    assert sign_in(web_app, "sec1").get(f"/tasks/attachments/{ref[0]}").status_code == 200
    assert sign_in(web_app, "member3").get(f"/tasks/attachments/{ref[0]}").status_code == 404


def test_an_instance_stopped_by_an_incident_keeps_the_input_and_says_why(
    lifecycle: Engine, web_app: Flask
) -> None:
    inst = lifecycle.start("project_lifecycle", "sec1", "B1")
    apply = task_of(lifecycle, "sec1", "apply")
    client = sign_in(web_app, "sec1")
    html = client.get(f"/tasks/{apply.id}").get_data(as_text=True)
    with lifecycle.db.write() as s:
        s.execute(update(Instance).where(Instance.id == inst.id).values(status="failed"))

    form = application_form(html)
    form.setlist("goals", ["全年零违章"])
    stopped = client.post(f"/tasks/{apply.id}", data=form)

    text = stopped.get_data(as_text=True)
    assert stopped.status_code == 409 and "异常已暂停" in text and "全年零违章</textarea>" in text
