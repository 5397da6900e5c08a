"""The audit trail is complete (every engine state change, in order), and readable, pageable, exportable.

The lifecycle walk pins the exact event sequence of the engine's own actions; other modules'
events (sign-in, directory, board, notifications) are tested where they are emitted.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import delete, inspect, select, text

from engine import Engine, Forbidden, InvalidState, NotFound
from engine import audit as engine_audit
from engine.audit_export import BOM, CSV_COLUMNS, record, rehash, stream
from engine.audit_query import AuditFilter, Scope, event, page, scope_for, timeline
from engine.directory import grant, org_by_code, user_by_name
from engine.models import AuditEvent, HumanTask, Incident, Instance, Job, MessageWait, utcnow
from tests.helpers import actions, assert_chain_intact, files, inbox_of, later, only_task
from web.cli import cli

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
APPLICATION = {"title": "红旗党建示范项目", "problems": ["青年党员参与度低"], "budget": 5000}


def trail(engine: Engine, after: int = 0) -> list[tuple[str, str]]:
    with engine.db.read() as s:
        rows = s.execute(
            select(AuditEvent.actor, AuditEvent.action).where(AuditEvent.seq > after).order_by(AuditEvent.seq)
        )
        return [(actor, action) for actor, action in rows]


def last_event(engine: Engine, action: str) -> AuditEvent:
    with engine.db.read() as s:
        return s.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq.desc()).limit(1)
        ).scalar_one()


def head_seq(engine: Engine) -> int:
    with engine.db.read() as s:
        return engine_audit.head(s).seq


@pytest.fixture
def second_secretary(engine: Engine) -> Engine:
    """member2 becomes B1's second branch secretary, so a B1 secretary task has someone to go to."""
    with engine.db.write() as s:
        grant(s, "member2", "B1", "branch_secretary")
    return engine


# --- completeness -------------------------------------------------------------------------------


def test_a_full_lifecycle_records_exactly_these_events(second_secretary: Engine) -> None:
    engine = second_secretary
    start = head_seq(engine)
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    apply = only_task(engine, "sec1")
    engine.claim(apply.id, "sec1")
    engine.unclaim(apply.id, "sec1")
    engine.claim(apply.id, "sec1")
    engine.delegate(apply.id, "sec1", "member2")
    engine.complete(apply.id, "member2", APPLICATION)
    engine.complete(
        only_task(engine, "office", "review").id, "office", {"verdict": "approve", "comment": "同意立项"}
    )
    engine.suspend(inst.id, "office", "核查申报材料")
    assert engine.run_due_jobs(later(6)) == 0  # a suspended instance's timer waits
    engine.resume(inst.id, "office", "材料属实")
    assert engine.run_due_jobs(later(6)) == 1
    engine.complete(only_task(engine, "secretary", "sign").id, "secretary", {})

    assert trail(engine, start) == [
        ("designer", "definition.deployed"),
        ("sec1", "instance.started"),
        ("sec1", "engine.steps"),
        ("sec1", "task.created"),  # 填写申报书, offered to B1's branch secretaries
        ("sec1", "task.claimed"),
        ("sec1", "task.unclaimed"),
        ("sec1", "task.claimed"),
        ("sec1", "task.delegated"),
        ("member2", "task.completed"),
        ("member2", "engine.steps"),
        ("member2", "task.created"),  # 完整性审核
        ("member2", "timer.scheduled"),  # its boundary timer (审核超时)
        ("office", "task.completed"),
        ("office", "engine.steps"),
        ("office", "timer.cancelled"),  # the boundary timer, no longer needed
        ("office", "timer.scheduled"),  # 公示期
        ("office", "instance.suspended"),
        ("office", "instance.resumed"),
        ("system", "timer.fired"),
        ("system", "engine.steps"),
        ("system", "task.created"),  # 签订项目合同
        ("secretary", "task.completed"),
        ("secretary", "engine.steps"),
        ("secretary", "instance.completed"),
    ]
    review = [e for e in _events(engine, inst.id) if e.action == "task.completed"][1]
    assert review.payload["data"] == {"verdict": "approve", "comment": "同意立项"}
    diff = review.payload["diff"]
    assert diff["added"]["verdict"] == "approve" and diff["added"]["summary"] == "红旗党建示范项目: 1 个问题"
    delegated = last_event(engine, "task.delegated")
    assert delegated.payload | {"task": 0} == {
        "task": 0,
        "title": "填写申报书",
        "from": "sec1",
        "to": "member2",
        "as": "assignee",
    }
    assert all(e.org_id == org_id(engine, "B1") for e in _events(engine, inst.id))
    assert_chain_intact(engine)


def _events(engine: Engine, instance_id: int) -> list[AuditEvent]:
    with engine.db.read() as s:
        return list(
            s.execute(
                select(AuditEvent).where(AuditEvent.instance_id == instance_id).order_by(AuditEvent.seq)
            ).scalars()
        )


def org_id(engine: Engine, code: str) -> int:
    with engine.db.read() as s:
        return org_by_code(s, code).id


def test_a_completion_records_the_submitted_data_and_the_data_before_and_after(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    engine.complete(only_task(engine, "sec1").id, "sec1", APPLICATION)
    engine.complete(only_task(engine, "office").id, "office", {"verdict": "return", "comment": "请补充"})
    engine.complete(only_task(engine, "sec1").id, "sec1", {**APPLICATION, "budget": 8000})
    resubmitted = last_event(engine, "task.completed")
    assert resubmitted.instance_id == inst.id
    assert resubmitted.payload["data"]["budget"] == 8000
    assert resubmitted.payload["diff"]["changed"]["budget"] == [5000, 8000]
    assert resubmitted.payload["diff"]["removed"] == []


def test_messages_and_incidents_are_recorded_in_the_order_they_happen(engine: Engine) -> None:
    engine.deploy(files("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json"), "designer")
    scoring = engine.start("scoring", "office", "HQ", {"judges": ["judge1", "judge2"]})
    for name, points in (("judge1", 90), ("judge2", 80)):
        engine.complete(only_task(engine, name, "score").id, name, {"points": points})
    engine.complete(only_task(engine, "office", "prepare").id, "office", {})
    engine.complete(only_task(engine, "office", "n_ack").id, "office", {})
    engine.send_message("budget_allocated", {"amount": 5000})
    assert actions(engine, scoring.id)[-4:] == [
        "engine.steps",
        "message.delivered",
        "engine.steps",
        "instance.completed",
    ]
    assert last_event(engine, "message.delivered").payload == {
        "name": "budget_allocated",
        "payload": {"amount": 5000},
    }

    engine.deploy(files("fragile.bpmn", "fragile.json"), "designer")
    fragile = engine.start("fragile", "sec1", "B1")
    engine.complete(only_task(engine, "sec1", "enter").id, "sec1", {"total": 1200, "count": 0})
    (incident,) = engine.instance(fragile.id).incidents
    engine.retry_incident(incident.id, "office", {"count": 4})
    assert actions(engine, fragile.id) == [
        "instance.started",
        "engine.steps",
        "task.created",
        "timer.scheduled",
        "task.completed",
        "incident.raised",  # caused by the completion, so recorded after it
        "incident.retried",
        "engine.steps",
        "task.created",
    ]
    assert last_event(engine, "incident.retried").payload["data"] == {"count": 4}
    assert_chain_intact(engine)


def test_events_outlive_their_instance(engine: Engine) -> None:
    """No foreign key ties an event to what it describes: deleting an instance leaves its history whole."""
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    engine.complete(only_task(engine, "sec1").id, "sec1", APPLICATION)
    assert AuditEvent.__table__.foreign_keys == set()
    assert inspect(engine.db.engine).get_foreign_keys("audit_event") == []
    before = actions(engine, inst.id)
    with engine.db.write() as s:
        for table in (HumanTask, Job, MessageWait, Incident):
            s.execute(delete(table).where(table.instance_id == inst.id))
        s.execute(delete(Instance).where(Instance.id == inst.id))
    assert actions(engine, inst.id) == before
    assert_chain_intact(engine)
    with engine.db.read() as s:
        line = timeline(s, inst.id, Scope(None))
    assert line.instance is None and [e.action for e in line.events] == before


# --- delegate ------------------------------------------------------------------------------------


def test_the_assignee_delegates_to_someone_who_may_act(second_secretary: Engine) -> None:
    engine = second_secretary
    engine.deploy(files(*APPROVAL), "designer")
    engine.start("approval", "sec1", "B1")
    task = only_task(engine, "sec1")
    with pytest.raises(Forbidden, match="only its assignee"):
        engine.delegate(task.id, "member2", "member2")  # a candidate, not its assignee
    engine.claim(task.id, "sec1")
    with pytest.raises(Forbidden, match="may not act"):
        engine.delegate(task.id, "sec1", "sec2")  # B2's secretary is not in this task's pool
    with pytest.raises(NotFound):
        engine.delegate(task.id, "sec1", "nobody")
    with pytest.raises(InvalidState, match="already assigned"):
        engine.delegate(task.id, "sec1", "sec1")
    row = engine.delegate(task.id, "sec1", "member2")
    assert row.assignee_id is not None and row.assignment == "delegated"
    assert [t.id for t in inbox_of(engine, "member2")] == [task.id]
    assert inbox_of(engine, "sec1") == []
    with pytest.raises(Forbidden):
        engine.complete(task.id, "sec1", APPLICATION)
    with pytest.raises(Forbidden):
        engine.unclaim(task.id, "member2")  # a delegation is not a claim to drop
    engine.complete(task.id, "member2", APPLICATION)
    with pytest.raises(InvalidState, match="already completed"):
        engine.delegate(task.id, "member2", "sec1")


def test_the_party_office_assigns_an_unclaimed_task(second_secretary: Engine) -> None:
    engine = second_secretary
    engine.deploy(files(*APPROVAL), "designer")
    engine.start("approval", "sec1", "B1")
    task = only_task(engine, "sec1")
    with pytest.raises(Forbidden):
        engine.delegate(task.id, "sec2", "member2")  # another branch's secretary supervises nothing here
    engine.delegate(task.id, "office", "member2")
    event = last_event(engine, "task.delegated")
    assert event.actor == "office" and event.payload["from"] is None and event.payload["as"] == "supervisor"
    engine.delegate(task.id, "office", "sec1")  # and back again
    assert [t.id for t in inbox_of(engine, "sec1")] == [task.id]


def test_a_task_without_a_pool_goes_to_someone_of_its_organisation(engine: Engine) -> None:
    engine.deploy(files("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json"), "designer")
    engine.start("scoring", "office", "HQ", {"judges": ["judge1"]})
    sheet = only_task(engine, "judge1", "score")  # owned by judge1: no candidate pool
    with pytest.raises(Forbidden):
        engine.delegate(sheet.id, "judge1", "outsider")  # holds no role anywhere
    engine.delegate(sheet.id, "judge1", "judge2")
    engine.complete(sheet.id, "judge2", {"points": 88})
    assert last_event(engine, "task.completed").actor == "judge2"


# --- suspend, resume, terminate -----------------------------------------------------------------


def test_suspend_freezes_an_instance_until_it_is_resumed(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    engine.complete(only_task(engine, "sec1").id, "sec1", APPLICATION)
    review = only_task(engine, "office", "review")
    with pytest.raises(Forbidden, match="party office"):
        engine.suspend(inst.id, "sec1", "我想暂停")
    with pytest.raises(NotFound):
        engine.suspend(99999, "office")
    suspended = engine.suspend(inst.id, "office", "  暂停\n核查  ")
    assert suspended.status == "suspended"
    assert last_event(engine, "instance.suspended").payload == {"reason": "暂停 核查", "held_jobs": 1}
    with pytest.raises(InvalidState, match="suspended"):
        engine.complete(review.id, "office", {"verdict": "approve"})
    with pytest.raises(InvalidState):
        engine.suspend(inst.id, "office")
    assert engine.run_due_jobs(later(4)) == 0  # the boundary timer is held
    assert engine.instance(inst.id).status == "suspended"
    resumed = engine.resume(inst.id, "office", "继续")
    assert resumed.status == "running"
    with pytest.raises(InvalidState, match="not suspended"):
        engine.resume(inst.id, "office")
    assert engine.run_due_jobs(later(4)) == 1  # overdue while suspended: it fires now
    assert only_task(engine, "office", "escalate").instance_id == inst.id
    assert_chain_intact(engine)


def test_terminate_closes_tasks_jobs_waits_and_incidents(engine: Engine) -> None:
    engine.deploy(files("fragile.bpmn", "fragile.json"), "designer")
    inst = engine.start("fragile", "sec1", "B1")
    engine.complete(only_task(engine, "sec1", "enter").id, "sec1", {"total": 1200, "count": 0})
    view = engine.instance(inst.id)
    assert view.status == "failed" and len(view.incidents) == 1
    with pytest.raises(Forbidden):
        engine.terminate(inst.id, "sec1", "不做了")
    open_tasks = [t.id for t in view.open_tasks]
    ended = engine.terminate(inst.id, "office", "经费测算方案作废")
    assert ended.status == "terminated" and ended.ended_at is not None
    after = engine.instance(inst.id)
    assert after.open_tasks == [] and after.incidents == []
    with engine.db.read() as s:
        states = set(s.execute(select(Job.state).where(Job.instance_id == inst.id)).scalars())
        assert states <= {"cancelled", "done"}
        assert s.execute(select(MessageWait).where(MessageWait.instance_id == inst.id)).first() is None
    event = last_event(engine, "instance.terminated")
    assert event.payload["previous_status"] == "failed" and event.payload["reason"] == "经费测算方案作废"
    assert event.payload["cancelled_tasks"] == open_tasks and len(event.payload["closed_incidents"]) == 1
    assert actions(engine, inst.id)[-1 - len(open_tasks) :] == ["instance.terminated"] + [
        "task.cancelled"
    ] * len(open_tasks)
    with pytest.raises(InvalidState, match="terminated"):
        engine.terminate(inst.id, "office")
    assert engine.run_due_jobs(later(5)) == 0
    assert_chain_intact(engine)


def test_a_suspended_instance_can_be_terminated_and_then_nothing_moves(engine: Engine) -> None:
    engine.deploy(files(*APPROVAL), "designer")
    inst = engine.start("approval", "sec1", "B1")
    task = only_task(engine, "sec1")
    engine.suspend(inst.id, "office")
    engine.terminate(inst.id, "office", "项目撤销")
    with pytest.raises(InvalidState):
        engine.complete(task.id, "sec1", APPLICATION)
    with pytest.raises(InvalidState):
        engine.resume(inst.id, "office")
    assert inbox_of(engine, "sec1") == []
    assert last_event(engine, "instance.terminated").payload["previous_status"] == "suspended"


# --- reading: scope, pages, filters -------------------------------------------------------------


@pytest.fixture
def busy(engine: Engine) -> Engine:
    """Two branches' instances, a deploy and a few completions: 30-odd events across HQ, B1 and B2."""
    engine.deploy(files(*APPROVAL), "designer")
    for secretary, branch in (("sec1", "B1"), ("sec2", "B2"), ("sec1", "B1")):
        engine.start("approval", secretary, branch)
        engine.complete(only_task(engine, secretary).id, secretary, {**APPLICATION, "title": f"{branch}项目"})
    return engine


def test_an_auditor_of_the_top_organisation_reads_everything_a_branch_auditor_only_the_branch(
    busy: Engine,
) -> None:
    with busy.db.write() as s:
        grant(s, "member1", "B1", "auditor")
    with busy.db.read() as s:
        assert scope_for(s, user_by_name(s, "auditor").id) == Scope(None)
        branch = scope_for(s, user_by_name(s, "member1").id)
        assert branch.org_ids == {org_by_code(s, "B1").id, org_by_code(s, "B1G1").id}
        with pytest.raises(Forbidden):
            scope_for(s, user_by_name(s, "sec1").id)
        everything = page(s, AuditFilter(), Scope(None), limit=1000).events
        mine = page(s, AuditFilter(), branch, limit=1000).events
        assert {e.org_code for e in mine} == {"B1"}
        assert len(mine) < len(everything) and any(e.org_id is None for e in everything)
        deploy = next(e for e in everything if e.action == "definition.deployed")
        with pytest.raises(NotFound):
            event(s, deploy.seq, branch)  # global events are not a branch auditor's
        b2 = next(e for e in everything if e.org_code == "B2" and e.instance_id)
        with pytest.raises(NotFound):
            timeline(s, b2.instance_id, branch)


def test_keyset_pages_walk_every_event_once_in_both_directions(busy: Engine) -> None:
    with busy.db.read() as s:
        total = engine_audit.head(s).seq
        seen, cursor, pages = [], None, []
        while True:
            result = page(s, AuditFilter(), Scope(None), before=cursor, limit=7)
            pages.append(result)
            seen += [e.seq for e in result.events]
            if result.older is None:
                break
            cursor = result.older
        assert seen == list(range(total, 0, -1))
        assert pages[0].newer is None and all(p.newer for p in pages[1:])
        back = page(s, AuditFilter(), Scope(None), after=pages[-1].newer, limit=7)
        assert [e.seq for e in back.events] == [e.seq for e in pages[-2].events]


def test_filters_by_actor_action_org_process_instance_and_time(busy: Engine) -> None:
    with busy.db.read() as s:
        everything = page(s, AuditFilter(), Scope(None), limit=1000).events
        b1 = org_by_code(s, "B1").id

        def seqs(**kwargs: object) -> list[int]:
            return [e.seq for e in page(s, AuditFilter(**kwargs), Scope(None), limit=1000).events]  # type: ignore[arg-type]

        assert seqs(actor="sec2") == [e.seq for e in everything if e.actor == "sec2"]
        assert seqs(action="task.completed") == [e.seq for e in everything if e.action == "task.completed"]
        assert seqs(org_id=org_by_code(s, "HQ").id) == [e.seq for e in everything if e.org_id is not None]
        assert seqs(org_id=b1) == [e.seq for e in everything if e.org_id == b1]
        assert seqs(process="approval") == [e.seq for e in everything if e.process == "approval"]
        assert seqs(process="nothing") == []
        first = everything[-1]
        assert seqs(instance_id=2) == [e.seq for e in everything if e.instance_id == 2]
        assert seqs(since=first.at - timedelta(seconds=1)) == [e.seq for e in everything]
        assert seqs(until=first.at) == []
        assert seqs(since=utcnow() + timedelta(minutes=1)) == []
        assert seqs(actor="sec1", action="task.completed", org_id=b1) == [
            e.seq for e in everything if e.actor == "sec1" and e.action == "task.completed"
        ]


def test_the_process_filter_finds_claims_that_name_only_their_instance(busy: Engine) -> None:
    task = inbox_of(busy, "office")[0]
    busy.claim(task.id, "office")
    with busy.db.read() as s:
        found = page(s, AuditFilter(process="approval", action="task.claimed"), Scope(None)).events
    assert [e.action for e in found] == ["task.claimed"] and found[0].process == "approval"


# --- export --------------------------------------------------------------------------------------


def export_text(engine: Engine, fmt: str, f: AuditFilter | None = None, actor: str = "auditor") -> str:
    f = f or AuditFilter()
    with engine.db.write() as s:
        upto = record(s, actor, fmt, f, Scope(None))
    return "".join(stream(engine.db, fmt, f, Scope(None), upto))


def test_csv_export_has_a_bom_and_chinese_survives_a_round_trip(busy: Engine) -> None:
    body = export_text(busy, "csv")
    raw = body.encode("utf-8")
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    completed = [r for r in rows if r["action"] == "task.completed"]
    assert json.loads(completed[0]["payload"])["data"]["title"] == "B1项目"
    assert json.loads(completed[0]["payload"])["data"]["problems"] == ["青年党员参与度低"]
    assert completed[0]["org"] == "B1" and completed[0]["process"] == "approval"
    assert completed[0]["at"].endswith("+08:00")
    assert rows[-1]["action"] == "audit_exported" and rows[-1]["actor"] == "auditor"  # ends with itself


def test_jsonl_export_lines_parse_and_each_rehashes_to_its_hash(busy: Engine) -> None:
    b1 = org_id(busy, "B1")
    lines = export_text(busy, "jsonl", AuditFilter(org_id=b1)).splitlines()
    parsed = [json.loads(line) for line in lines]
    assert parsed and {p["org"] for p in parsed} == {"B1"}
    assert all(rehash(p) == p["hash"] for p in parsed)
    assert any(p["payload"].get("data", {}).get("title") == "B1项目" for p in parsed)


def test_an_export_is_itself_audited_with_its_format_and_filters(busy: Engine) -> None:
    b2 = org_id(busy, "B2")
    export_text(busy, "jsonl", AuditFilter(org_id=b2, action="task.completed"))
    exported = last_event(busy, "audit_exported")
    assert exported.actor == "auditor"
    assert exported.payload == {
        "format": "jsonl",
        "filters": {"org_id": b2, "action": "task.completed"},
        "scope": "all",
    }
    assert_chain_intact(busy)


def test_csv_cells_that_look_like_formulas_are_defused(engine: Engine) -> None:
    with engine.db.write() as s:
        engine_audit.append(
            s, [engine_audit.PendingEvent('=HYPERLINK("x")', "sign_in_failed", {"reason": "credentials"})]
        )
    rows = list(csv.reader(io.StringIO(export_text(engine, "csv").lstrip(BOM))))
    assert rows[1][2] == '\'=HYPERLINK("x")'


def test_an_unknown_format_records_nothing(engine: Engine) -> None:
    before = head_seq(engine)
    with pytest.raises(ValueError), engine.db.write() as s:
        record(s, "auditor", "xlsx", AuditFilter(), Scope(None))
    assert head_seq(engine) == before


# --- the qizhi audit commands -------------------------------------------------------------------


@pytest.fixture
def qizhi(web_app: Flask, busy: Engine):  # type: ignore[no-untyped-def]
    runner = web_app.test_cli_runner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args))

    return run


def test_checkpoint_export_head_and_verify_against_it(qizhi, busy: Engine) -> None:  # type: ignore[no-untyped-def]
    missing = qizhi("audit", "export-head")
    assert missing.exit_code == 1 and "no checkpoint yet" in missing.output
    made = qizhi("audit", "checkpoint", "--as", "auditor")
    assert made.exit_code == 0, made.output
    shown = qizhi("audit", "export-head")
    assert shown.exit_code == 0
    exported = json.loads(shown.output)
    assert set(exported) == {"seq", "hash", "at", "created_by"} and exported["created_by"] == "auditor"
    assert json.loads(made.output.splitlines()[-1]) == exported

    ok = qizhi("audit", "verify", "--against", shown.output)
    assert ok.exit_code == 0 and f"history up to seq {exported['seq']} matches" in ok.output
    ok2 = qizhi("audit", "verify", "--checkpoint", f"{exported['seq']}:{exported['hash']}")
    assert ok2.exit_code == 0

    with busy.db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 3"))
    busy.start("approval", "sec1", "B1")
    tampered = exported["seq"] + 2  # after the checkpoint: the next checkpoint's own check finds it
    with busy.db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = :seq"), {"seq": tampered})
    refused = qizhi("audit", "checkpoint")
    assert refused.exit_code == 1 and f"BROKEN at seq {tampered}" in refused.output
    with busy.db.engine.begin() as conn:  # before it: verify against the exported head finds it
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 3"))
    broken = qizhi("audit", "verify", "--against", shown.output)
    assert broken.exit_code == 1 and "BROKEN at seq 3" in broken.output


def test_verify_refuses_a_malformed_head(qizhi) -> None:  # type: ignore[no-untyped-def]
    result = qizhi("audit", "verify", "--against", '{"seq": 3}')
    assert result.exit_code == 2 and "hash" in result.output
    unknown = qizhi("audit", "checkpoint", "--as", "nobody")
    assert unknown.exit_code == 1 and "nobody" in unknown.output
    two = qizhi("audit", "verify", "--against", "1:" + "a" * 64, "--checkpoint", "2:" + "b" * 64)
    assert two.exit_code == 2 and "not two different heads" in two.output


def test_cli_export_to_standard_output(qizhi) -> None:  # type: ignore[no-untyped-def]
    result = qizhi(
        "audit", "export", "--format", "jsonl", "--out", "-", "--as", "auditor", "--action", "task.completed"
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and {line["action"] for line in lines} == {"task.completed"}


def test_cli_export_writes_a_file_and_is_audited(qizhi, busy: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "trail.csv"
    result = qizhi("audit", "export", "--format", "csv", "--out", str(out), "--as", "auditor", "--org", "B2")
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows and {r["org"] for r in rows} == {"B2"}
    assert f"exported {len(rows)} events" in result.output
    assert last_event(busy, "audit_exported").payload["filters"] == {"org_id": org_id(busy, "B2")}

    jsonl = tmp_path / "trail.jsonl"
    result = qizhi(
        "audit",
        "export",
        "--format",
        "jsonl",
        "--out",
        str(jsonl),
        "--as",
        "auditor",
        "--since",
        "2000-01-01",
        "--actor",
        "sec1",
    )
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["actor"] for line in jsonl.read_text(encoding="utf-8").splitlines()} == {"sec1"}


def test_cli_export_refuses_bad_input_and_writes_nothing(qizhi, busy: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "x.csv"
    before = head_seq(busy)
    for args in (
        ("--as", "sec1"),  # not an auditor
        ("--as", "auditor", "--org", "NOPE"),
        ("--as", "auditor", "--since", "yesterday"),
    ):
        result = qizhi("audit", "export", "--format", "csv", "--out", str(out), *args)
        assert result.exit_code != 0 and "Traceback" not in result.output
    assert not out.exists() and head_seq(busy) == before
