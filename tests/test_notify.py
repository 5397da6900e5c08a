"""Reminders, escalations and their channels: in-app rows once per due date, e-mail, a webhook.

The approval fixture's first task (填写申报书, lane branch_secretary, due in 7 days) is the task
under test: sec1 of B1 may claim it; nobody holds branch_secretary above B1, so its supervisor is
the party office of HQ (rule 2 of engine.notify), unless a test adds a secretary above.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update

from engine import Engine
from engine.directory import add_user, grant
from engine.models import HumanTask, Job, Notification, User
from engine.notify import ChannelConfigError, Channels, Smtp, supervisors
from tests.helpers import actions, assert_chain_intact, files, only_task
from tests.web import post, sign_in

APPROVAL = ("approval.bpmn", "apply.json", "review.json")


@pytest.fixture
def task(engine: Engine) -> HumanTask:
    """The open 填写申报书 task of a fresh approval in B1, due in 7 days."""
    engine.deploy(files(*APPROVAL), "designer")
    engine.start("approval", "sec1", "B1")
    row = only_task(engine, "sec1", "apply")
    assert row.due_at is not None
    return row


def notices(engine: Engine, kind: str | None = None) -> list[tuple[str, str, str]]:
    """(username, kind, dedupe key) of every notification, oldest first."""
    with engine.db.read() as s:
        query = select(User.username, Notification.kind, Notification.dedupe_key).join(
            User, User.id == Notification.user_id
        )
        if kind:
            query = query.where(Notification.kind == kind)
        return [tuple(r) for r in s.execute(query.order_by(Notification.id))]  # type: ignore[misc]


def reminder_job(engine: Engine, row: HumanTask) -> Job:
    with engine.db.read() as s:
        return s.execute(
            select(Job).where(Job.instance_id == row.instance_id, Job.kind == "reminder")
        ).scalar_one()


def test_a_reminder_goes_to_the_candidates_once_per_due_date_then_the_job_waits_for_the_due_date(
    engine: Engine, task: HumanTask
) -> None:
    job = reminder_job(engine, task)
    assert job.due_at == task.due_at - timedelta(days=1)  # reminderBefore defaults to P1D

    assert engine.run_due_jobs(job.due_at + timedelta(minutes=1)) == 1
    key = f"reminder:{task.id}:{task.due_at.astimezone(UTC).isoformat()}"
    assert notices(engine) == [("sec1", "reminder", key)]
    again = reminder_job(engine, task)
    assert (again.state, again.due_at, again.lease_owner) == ("pending", task.due_at, None)

    with engine.db.write() as s:  # the same reminder run twice (a lease lost mid-job): no second notice
        s.execute(update(Job).where(Job.id == job.id).values(due_at=job.due_at))
    assert engine.run_due_jobs(job.due_at + timedelta(minutes=2)) == 1
    assert notices(engine) == [("sec1", "reminder", key)]
    assert actions(engine, task.instance_id).count("task.reminder") == 2  # both runs audited, one notice
    assert_chain_intact(engine)


def test_overdue_marks_the_task_tells_its_people_and_escalates_to_the_party_office(
    engine: Engine, task: HumanTask
) -> None:
    engine.claim(task.id, "sec1")
    assert engine.run_due_jobs(task.due_at - timedelta(hours=1)) == 1  # the reminder
    assert engine.run_due_jobs(task.due_at + timedelta(minutes=1)) == 1  # the due date
    due = task.due_at.astimezone(UTC).isoformat()
    assert notices(engine) == [
        ("sec1", "reminder", f"reminder:{task.id}:{due}"),
        ("sec1", "overdue", f"overdue:{task.id}:{due}"),
        ("office", "escalation", f"escalation:{task.id}:{due}"),
    ]
    with engine.db.read() as s:
        row = s.get(HumanTask, task.id)
    assert row.escalated_at == task.due_at + timedelta(minutes=1)
    assert reminder_job(engine, task).state == "done"
    assert engine.run_due_jobs(task.due_at + timedelta(days=5)) == 0  # nothing more, ever
    assert actions(engine, task.instance_id)[-2:] == ["task.reminder", "task.escalated"]
    assert_chain_intact(engine)


def test_a_late_worker_skips_the_stale_reminder_and_escalates(engine: Engine, task: HumanTask) -> None:
    assert engine.run_due_jobs(task.due_at + timedelta(days=1)) == 1
    assert [k for _, k, _ in notices(engine)] == ["overdue", "escalation"]


def test_completing_the_task_drops_its_reminder(engine: Engine, task: HumanTask) -> None:
    engine.complete(task.id, "sec1", {"title": "按时提交", "problems": ["问题"]})
    with engine.db.read() as s:
        kinds = s.execute(select(Job.kind).where(Job.instance_id == task.instance_id)).scalars().all()
    assert kinds == ["timer"]  # the review's own 3-day timer; the reminder went with the task
    engine.run_due_jobs(task.due_at + timedelta(days=1))
    assert notices(engine) == []


def test_the_supervisor_is_the_same_role_one_organisation_up_when_someone_holds_it(
    engine: Engine, task: HumanTask
) -> None:
    with engine.db.write() as s:
        add_user(s, "gsec", "总支书记")
        grant(s, "gsec", "HQ", "branch_secretary")
    with engine.db.read() as s:
        row = s.get(HumanTask, task.id)
        sec1 = s.execute(select(User.id).where(User.username == "sec1")).scalar_one()
        assert [u.username for u in supervisors(s, row, {sec1})] == ["gsec"]
        row.lane, row.candidate_key = None, None  # a task with no lane: the party office, then the committee
        office = s.execute(select(User.id).where(User.username == "office")).scalar_one()
        assert [u.username for u in supervisors(s, row, set())] == ["office"]
        assert [u.username for u in supervisors(s, row, {office})] == ["secretary"]
        s.rollback()


def test_channels_are_read_from_settings_and_refuse_bad_values() -> None:
    assert Channels.from_settings({}).outbound == ()
    both = Channels.from_settings(
        {
            "QIZHI_SMTP_HOST": "mail.example.cn",
            "QIZHI_SMTP_PORT": "587",
            "QIZHI_SMTP_USER": "qizhi",
            "QIZHI_WEBHOOK_URL": "https://robot.example.cn/send?key=1",
        }
    )
    assert both.outbound == ("email", "webhook")
    assert both.smtp == Smtp("mail.example.cn", 587, "qizhi", "qizhi", None, "starttls")
    with pytest.raises(ChannelConfigError, match="QIZHI_SMTP_PORT"):
        Channels.from_settings({"QIZHI_SMTP_HOST": "h", "QIZHI_SMTP_PORT": "smtp", "QIZHI_SMTP_FROM": "a@b"})
    with pytest.raises(ChannelConfigError, match="QIZHI_SMTP_TLS"):
        Channels.from_settings({"QIZHI_SMTP_HOST": "h", "QIZHI_SMTP_TLS": "maybe", "QIZHI_SMTP_FROM": "a@b"})
    with pytest.raises(ChannelConfigError, match="QIZHI_SMTP_FROM"):
        Channels.from_settings({"QIZHI_SMTP_HOST": "h"})
    with pytest.raises(ChannelConfigError, match="QIZHI_WEBHOOK_URL"):
        Channels.from_settings({"QIZHI_WEBHOOK_URL": "ftp://x"})


# --- the outbound channels, against local fakes --------------------------------------------------


class FakeSmtp(socketserver.ThreadingTCPServer):
    """Just enough SMTP for smtplib: greets, accepts one envelope per DATA, records each message."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SmtpSession)
        self.messages: list[tuple[list[str], str]] = []


class SmtpSession(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        server: FakeSmtp = self.server  # type: ignore[assignment]
        self.reply("220 fake ESMTP")
        rcpts: list[str] = []
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 fake")
            elif verb == "MAIL":
                rcpts = []
                self.reply("250 ok")
            elif verb == "RCPT":
                rcpts.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                body = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body += chunk
                server.messages.append((rcpts, body.decode("utf-8", "replace")))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        server: HookServer = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.posts.append(json.loads(body))
        status, answer = server.answers.pop(0) if server.answers else (200, {"errcode": 0, "errmsg": "ok"})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        return


class HookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Hook)
        self.posts: list[dict] = []
        self.answers: list[tuple[int, dict]] = []


@pytest.fixture
def outbound(engine: Engine) -> Iterator[tuple[FakeSmtp, HookServer]]:
    smtp, hook = FakeSmtp(), HookServer()
    for server in (smtp, hook):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    engine.channels = Channels(
        smtp=Smtp("127.0.0.1", smtp.server_address[1], "qizhi@example.cn"),
        webhook_url=f"http://127.0.0.1:{hook.server_address[1]}/robot",
        base_url="https://qizhi.example.cn",
        timeout=5,
    )
    with engine.db.write() as s:
        s.execute(update(User).where(User.username == "sec1").values(email="sec1@example.cn"))
    yield smtp, hook
    for server in (smtp, hook):
        server.shutdown()
        server.server_close()


def test_a_reminder_goes_out_by_email_and_webhook_after_commit_and_only_once(
    engine: Engine, task: HumanTask, outbound: tuple[FakeSmtp, HookServer]
) -> None:
    smtp, hook = outbound
    at = task.due_at - timedelta(hours=2)
    assert engine.run_due_jobs(at) == 1  # the reminder writes its rows and queues the sends
    assert smtp.messages == [] and hook.posts == []  # nothing left the building inside that transaction
    assert engine.run_due_jobs(at) == 2  # the e-mail job and the webhook job
    ((rcpts, message),) = smtp.messages
    assert rcpts == ["sec1@example.cn"] and "Subject:" in message
    ((body),) = hook.posts
    assert body["msgtype"] == "text" and "填写申报书" in body["text"]["content"]
    assert body["qizhi"] == {
        "kind": "reminder",
        "task": task.id,
        "instance": task.instance_id,
        "recipients": ["sec1"],
    }
    assert engine.run_due_jobs(at + timedelta(minutes=5)) == 0
    with engine.db.write() as s:  # the reminder again (as after a lost lease): no new rows, no new sends
        s.execute(update(Job).where(Job.kind == "reminder").values(due_at=at))
    assert engine.run_due_jobs(at + timedelta(minutes=6)) == 1
    assert engine.run_due_jobs(at + timedelta(minutes=6)) == 0
    assert len(smtp.messages) == 1 and len(hook.posts) == 1


def test_a_failing_webhook_backs_off_and_is_retried_without_holding_up_the_rest(
    engine: Engine, task: HumanTask, outbound: tuple[FakeSmtp, HookServer]
) -> None:
    smtp, hook = outbound
    hook.answers = [(500, {"error": "busy"}), (200, {"errcode": 93000, "errmsg": "invalid webhook url"})]
    at = task.due_at - timedelta(hours=2)
    engine.run_due_jobs(at)
    assert engine.run_due_jobs(at) == 2
    assert len(smtp.messages) == 1  # the e-mail went out regardless
    with engine.db.read() as s:
        job = s.execute(select(Job).where(Job.kind == "webhook:reminder")).scalar_one()
    assert job.state == "pending" and job.attempts == 1 and "500" in job.last_error
    assert engine.run_due_jobs(job.lease_until + timedelta(seconds=1)) == 1
    with engine.db.read() as s:
        job = s.get(Job, job.id)
    assert job.attempts == 2 and "93000" in job.last_error  # a robot's refusal is a failure too
    assert engine.run_due_jobs(job.lease_until + timedelta(seconds=1)) == 1
    with engine.db.read() as s:
        assert s.get(Job, job.id).state == "done"
    assert len(hook.posts) == 3 and len(smtp.messages) == 1


def test_a_send_for_a_task_done_meanwhile_is_dropped(
    engine: Engine, task: HumanTask, outbound: tuple[FakeSmtp, HookServer]
) -> None:
    smtp, hook = outbound
    at = task.due_at - timedelta(hours=2)
    engine.run_due_jobs(at)
    engine.complete(task.id, "sec1", {"title": "已提交", "problems": ["问题"]})
    engine.run_due_jobs(at)  # the two sends (and the review's 3-day timer)
    with engine.db.read() as s:
        sends = s.execute(select(Job.state).where(Job.kind.in_(("email:reminder", "webhook:reminder")))).all()
    assert sends == [("done",), ("done",)]
    assert smtp.messages == [] and hook.posts == []


# --- the notifications page ---------------------------------------------------------------------


def test_the_notifications_page_lists_mine_newest_first_and_marks_them_read(
    web_app, engine: Engine, task: HumanTask
) -> None:  # type: ignore[no-untyped-def]
    engine.run_due_jobs(task.due_at - timedelta(hours=1))
    engine.run_due_jobs(task.due_at + timedelta(minutes=1))
    client = sign_in(web_app, "sec1")
    page = client.get("/notifications/").get_data(as_text=True)
    assert page.index("已逾期") < page.index("即将到期")  # newest first
    assert page.count("data-notification=") == 2 and page.count("is-unread") == 2
    assert '<span class="badge">2</span>' in client.get("/").get_data(as_text=True)

    with engine.db.read() as s:
        mine = s.execute(select(Notification).order_by(Notification.id)).scalars().all()
    office_note = next(n for n in mine if n.kind == "escalation")
    first = next(n for n in mine if n.kind == "reminder")
    assert post(client, f"/notifications/{office_note.id}/read").status_code == 404  # not mine
    response = post(client, f"/notifications/{first.id}/read", {"open": "1"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/tasks/{task.id}")
    assert client.get("/notifications/?unread=1").get_data(as_text=True).count("data-notification=") == 1
    assert post(client, "/notifications/read-all").status_code == 302
    page = client.get("/notifications/").get_data(as_text=True)
    assert "is-unread" not in page and page.count("data-notification=") == 2

    office = sign_in(web_app, "office").get("/notifications/").get_data(as_text=True)
    assert office.count("data-notification=") == 1 and "逾期未办" in office
    assert (
        sign_in(web_app, "member1").get("/notifications/").get_data(as_text=True).count("data-notification=")
        == 0
    )
