"""The audit room in the browser: auditors read, filter, page, inspect and export; nobody else gets in."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from engine import Engine
from engine.audit_export import rehash
from engine.directory import grant, org_by_code
from engine.models import AuditEvent
from tests.helpers import files, only_task
from tests.web import post, sign_in

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
ROW = re.compile(r'<tr data-seq="(\d+)" data-action="([^"]+)">')


def rows(html: str) -> list[tuple[int, str]]:
    return [(int(seq), action) for seq, action in ROW.findall(html)]


def link(html: str, rel: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="' + rel + '">', html)
    return found.group(1).replace("&amp;", "&") if found else None


@pytest.fixture
def trail(engine: Engine) -> Engine:
    """Two projects in two branches, one reviewed: about thirty events."""
    engine.deploy(files(*APPROVAL), "designer")
    engine.start("approval", "sec1", "B1", {"title": "红旗党建示范项目"})
    engine.complete(
        only_task(engine, "sec1").id, "sec1", {"title": "红旗党建示范项目", "problems": ["青年党员参与度低"]}
    )
    engine.complete(only_task(engine, "office").id, "office", {"verdict": "approve", "comment": "同意立项"})
    engine.start("approval", "sec2", "B2", {"title": "二支部项目"})
    return engine


@pytest.fixture
def auditor(web_app: Flask, trail: Engine) -> FlaskClient:
    return sign_in(web_app, "auditor")


def events_of(engine: Engine, action: str) -> list[AuditEvent]:
    with engine.db.read() as s:
        return list(
            s.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            ).scalars()
        )


def test_only_auditors_and_administrators_get_in(web_app: Flask, trail: Engine) -> None:
    assert web_app.test_client().get("/audit/").status_code == 302  # to the sign-in page
    for username in ("sec1", "office", "outsider"):
        client = sign_in(web_app, username)
        assert client.get("/audit/").status_code == 403, username
        assert client.get("/audit/event/1").status_code == 403
        assert client.get("/audit/instance/1").status_code == 403
        assert post(client, "/audit/export", {"format": "csv"}).status_code == 403
    with trail.db.write() as s:
        grant(s, "outsider", "HQ", "admin")
    assert sign_in(web_app, "outsider").get("/audit/").status_code == 200


def test_the_auditor_sees_the_trail_newest_first_with_filters_and_a_chain_status(
    auditor: FlaskClient,
) -> None:
    page = auditor.get("/audit/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    seqs = [seq for seq, _ in rows(html)]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 16
    for name in ("since", "until", "actor", "action", "org", "process", "instance", "q"):
        assert f'name="{name}"' in html
    assert 'data-chain="ok"' in html and "审计链完整" in html
    assert "提交办理" in html and "部署流程定义" in html  # Chinese action labels
    assert 'href="/audit/instance/1"' in html


def test_filters_narrow_the_list(auditor: FlaskClient, trail: Engine) -> None:
    html = auditor.get("/audit/?actor=sec2").get_data(as_text=True)
    assert rows(html) and all(seq in _seqs_by(trail, actor="sec2") for seq, _ in rows(html))
    html = auditor.get("/audit/?action=task.completed&instance=1").get_data(as_text=True)
    assert [a for _, a in rows(html)] == ["task.completed", "task.completed"]
    with trail.db.read() as s:
        b2 = org_by_code(s, "B2").id
    html = auditor.get(f"/audit/?org={b2}&process=approval").get_data(as_text=True)
    assert rows(html) and {seq for seq, _ in rows(html)} == set(_seqs_by(trail, org_id=b2))
    html = auditor.get("/audit/?since=2000-01-01&until=2000-01-02").get_data(as_text=True)
    assert rows(html) == [] and "没有符合条件的审计记录" in html


def _seqs_by(engine: Engine, **where: object) -> list[int]:
    with engine.db.read() as s:
        query = select(AuditEvent.seq)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(s.execute(query).scalars())


def test_pages_follow_keyset_cursors_both_ways(auditor: FlaskClient, trail: Engine) -> None:
    for i in range(30):  # enough events for a second page of 50
        trail.start("approval", "sec1", "B1", {"title": f"项目{i}"})
    first = auditor.get("/audit/").get_data(as_text=True)
    older = link(first, "next")
    assert older and "before=" in older and link(first, "prev") is None
    second = auditor.get(older).get_data(as_text=True)
    assert rows(second) and max(s for s, _ in rows(second)) < min(s for s, _ in rows(first))
    back = auditor.get(link(second, "prev")).get_data(as_text=True)
    assert rows(back) == rows(first)
    filtered = auditor.get("/audit/?action=instance.started").get_data(as_text=True)
    assert link(filtered, "next") is None or "action=instance.started" in link(filtered, "next")


def test_bad_filters_are_explained_not_crashed_on(auditor: FlaskClient) -> None:
    for query, field in (
        ("instance=abc", "instance"),
        ("since=yesterday", "since"),
        ("org=99999", "org"),
        ("since=2025-06-02&until=2025-06-01", "until"),
        ("actor=" + "x" * 200, "actor"),
    ):
        page = auditor.get(f"/audit/?{query}")
        assert page.status_code == 400, query
        assert f'data-field="{field}"' in page.get_data(as_text=True)
    assert auditor.get("/audit/?before=xyz").status_code == 400


def test_an_event_shows_its_data_its_diff_and_its_own_check(auditor: FlaskClient, trail: Engine) -> None:
    review = events_of(trail, "task.completed")[1]
    html = auditor.get(f"/audit/event/{review.seq}").get_data(as_text=True)
    assert "实例数据变化" in html and 'class="added"' in html and "同意立项" in html
    assert 'data-check="hash"' in html and "内容与哈希一致" in html and review.hash in html
    assert auditor.get("/audit/event/999999").status_code == 404

    with trail.db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = :seq"), {"seq": review.seq})
    html = auditor.get(f"/audit/event/{review.seq}").get_data(as_text=True)
    assert "内容与哈希不符" in html


def test_the_status_box_names_the_first_broken_event(web_app: Flask, trail: Engine) -> None:
    with trail.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 4"))
    html = sign_in(web_app, "auditor").get("/audit/").get_data(as_text=True)
    assert 'data-chain="broken"' in html and 'data-first-bad="4"' in html and "记录缺失" in html


def test_the_status_box_goes_on_from_what_it_verified(auditor: FlaskClient, trail: Engine) -> None:
    assert 'data-chain="ok"' in auditor.get("/audit/").get_data(as_text=True)
    trail.start("approval", "sec1", "B1")
    with trail.db.engine.begin() as conn:  # tamper with a new event: the next view checks it
        conn.execute(
            text("UPDATE audit_event SET actor = 'mallory' WHERE seq = (SELECT MAX(seq) FROM audit_event)")
        )
    assert 'data-chain="broken"' in auditor.get("/audit/").get_data(as_text=True)


def test_an_instance_timeline_reads_oldest_first(auditor: FlaskClient, trail: Engine) -> None:
    html = auditor.get("/audit/instance/1").get_data(as_text=True)
    seqs = [int(s) for s in re.findall(r'<li data-seq="(\d+)"', html)]
    assert seqs == sorted(seqs) and seqs == _seqs_by(trail, instance_id=1)
    assert "红旗党建示范项目" in html and "青年党员参与度低" in html
    assert auditor.get("/audit/instance/4242").status_code == 404


def test_a_branch_auditor_sees_only_the_branch(web_app: Flask, trail: Engine) -> None:
    with trail.db.write() as s:
        grant(s, "member3", "B2", "auditor")
    client = sign_in(web_app, "member3")
    html = client.get("/audit/").get_data(as_text=True)
    b2_seqs = set(_seqs_by(trail, org_id=_org(trail, "B2")))
    assert rows(html) and {seq for seq, _ in rows(html)} == b2_seqs
    assert client.get("/audit/instance/1").status_code == 404  # B1's project
    assert client.get("/audit/event/1").status_code == 404  # the deployment: no organisation
    assert client.get(f"/audit/?org={_org(trail, 'B1')}").status_code == 400


def _org(engine: Engine, code: str) -> int:
    with engine.db.read() as s:
        return org_by_code(s, code).id


def test_searching_a_title_leads_to_the_instance(auditor: FlaskClient) -> None:
    html = auditor.get("/audit/?q=红旗").get_data(as_text=True)
    assert 'href="/audit/instance/1">#1 红旗党建示范项目' in html
    assert "没有匹配的实例" in auditor.get("/audit/?q=%25_").get_data(as_text=True)


def test_csv_export_is_streamed_with_a_bom_and_audited(auditor: FlaskClient, trail: Engine) -> None:
    response = post(auditor, "/audit/export", {"format": "csv", "instance": "1"})
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbf")
    table = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert {r["instance"] for r in table} == {"1"}
    assert any("红旗党建示范项目" in r["payload"] for r in table)
    (exported,) = events_of(trail, "audit_exported")
    assert exported.actor == "auditor"
    assert exported.payload["format"] == "csv" and exported.payload["filters"] == {"instance_id": 1}


def test_jsonl_export_lines_parse_and_rehash(auditor: FlaskClient, trail: Engine) -> None:
    response = post(auditor, "/audit/export", {"format": "jsonl", "actor": "sec1"})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert lines and {line["actor"] for line in lines} == {"sec1"}
    assert all(rehash(line) == line["hash"] for line in lines)


def test_exports_refuse_bad_requests_and_record_nothing(auditor: FlaskClient, trail: Engine) -> None:
    assert post(auditor, "/audit/export", {"format": "xlsx"}).status_code == 400
    assert post(auditor, "/audit/export", {"format": "csv", "since": "nonsense"}).status_code == 400
    assert auditor.post("/audit/export", data={"format": "csv"}).status_code == 400  # no CSRF token
    assert auditor.get("/audit/export").status_code == 405
    assert events_of(trail, "audit_exported") == []
