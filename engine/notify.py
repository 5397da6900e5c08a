"""Reminders and escalations of human tasks, and the channels that carry them.

**When.** A task with a due date gets one ``reminder`` job (engine.work schedules it ``reminderBefore``
ahead, default P1D, or at the due date when that moment has passed). Run ahead of the due date it
reminds the task's people and moves itself to the due date; run at or after the due date it tells
the task's people the task is overdue, marks the task (``human_task.escalated_at``) and escalates.

**Who.** The task's people: its assignee; when unclaimed, every active holder of its candidate key
(a role in an organisation, or a group). **The supervisor of a lane** (who hears of an escalation),
first rule that names anyone other than the task's own people:

1. the same role in the nearest organisation *above* the one the lane resolved to (a branch's
   overdue ``branch_secretary`` task goes to the general branch's secretary);
2. the party office (``party_office``) in the task's organisation or the nearest one above it;
3. the party committee (``party_committee``) likewise.

A task with no lane or a group lane starts at rule 2. If no rule names anyone, the escalation is
still recorded, with nobody to tell.

**Once.** Every notice is a ``notification`` row, unique per user and ``dedupe_key`` =
``<kind>:<task id>:<due date ISO>``, so running a job twice, or two workers racing, never reminds
anyone twice for the same due date; a new due date is a new key.

**Channels.** In-app rows are written in the reminder job's transaction. E-mail (when SMTP is
configured) and the webhook (a JSON POST the way enterprise chat robots are fed) go out later, as
jobs of their own (``email:<kind>``, ``webhook:<kind>``) run after that transaction committed: a
slow or broken relay has a timeout, is retried with the jobs' backoff and finally becomes an
incident, and never holds up a reminder or anyone's unit of work.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import audit, directory
from engine.models import GroupMember, HumanTask, Instance, Job, Membership, Notification, Organisation, User
from engine.work import SYSTEM

if TYPE_CHECKING:
    from engine.runtime import Engine, Lease

REMINDER, OVERDUE, ESCALATION = "reminder", "overdue", "escalation"
CHANNELS = ("email", "webhook")
SUPERVISOR_FALLBACK = ("party_office", "party_committee")
DEFAULT_TIMEOUT = 10.0
BEIJING = timezone(timedelta(hours=8))  # how the people reading a reminder tell time (no DST in China)


# --- configuration -------------------------------------------------------------------------------


class ChannelConfigError(ValueError):
    """A channel setting has a value we cannot use; the message names the variable."""


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    tls: str = "none"  # none | starttls | ssl


@dataclass(frozen=True)
class Channels:
    """Where notices go besides the in-app list. Nothing configured: in-app only."""

    smtp: Smtp | None = None
    webhook_url: str | None = None
    base_url: str | None = None  # the site's address, for links in e-mails and chat messages
    timeout: float = DEFAULT_TIMEOUT

    @property
    def outbound(self) -> tuple[str, ...]:
        return tuple(c for c, on in (("email", self.smtp), ("webhook", self.webhook_url)) if on)

    @classmethod
    def from_settings(cls, env: Mapping[str, object]) -> Channels:
        """Read QIZHI_SMTP_HOST/PORT/USER/PASSWORD/FROM/TLS, QIZHI_WEBHOOK_URL and QIZHI_BASE_URL.

        QIZHI_SMTP_TLS is ``starttls``, ``ssl`` or ``none``; unset, it is ``ssl`` on port 465,
        ``starttls`` when a user name is given (credentials never cross the wire in clear), else ``none``.
        """

        def get(name: str) -> str | None:
            value = env.get(name)
            return str(value).strip() or None if value is not None else None

        smtp = None
        host = get("QIZHI_SMTP_HOST")
        if host:
            port_text = get("QIZHI_SMTP_PORT") or "25"
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ChannelConfigError(f"QIZHI_SMTP_PORT must be a port number (got {port_text!r})")
            port, user = int(port_text), get("QIZHI_SMTP_USER")
            default_tls = "ssl" if port == 465 else "starttls" if user else "none"
            tls = (get("QIZHI_SMTP_TLS") or default_tls).lower()
            tls = {"1": "starttls", "true": "starttls", "0": "none", "false": "none"}.get(tls, tls)
            if tls not in ("none", "starttls", "ssl"):
                raise ChannelConfigError(f"QIZHI_SMTP_TLS must be starttls, ssl or none (got {tls!r})")
            sender = get("QIZHI_SMTP_FROM") or user
            if not sender:
                raise ChannelConfigError("QIZHI_SMTP_FROM is needed when QIZHI_SMTP_HOST is set")
            smtp = Smtp(host, port, sender, user, get("QIZHI_SMTP_PASSWORD"), tls)
        webhook = get("QIZHI_WEBHOOK_URL")
        if webhook and not webhook.startswith(("http://", "https://")):
            raise ChannelConfigError(f"QIZHI_WEBHOOK_URL must be an http(s) address (got {webhook!r})")
        base = get("QIZHI_BASE_URL")
        return cls(smtp, webhook, base.rstrip("/") if base else None)


# --- who ---------------------------------------------------------------------------------------------


def _active(s: Session, user_ids: set[int]) -> list[User]:
    if not user_ids:
        return []
    return list(s.execute(select(User).where(User.id.in_(user_ids), User.active).order_by(User.id)).scalars())


def holders_of_key(s: Session, key: str | None) -> list[User]:
    """The active people a candidate key stands for: ``org:<id>:<role>`` or ``group:<name>``."""
    if not key:
        return []
    kind, _, rest = key.partition(":")
    if kind == "group":
        ids = s.execute(select(GroupMember.user_id).where(GroupMember.group_name == rest)).scalars()
        return _active(s, set(ids))
    org_id, _, role = rest.partition(":")
    org = s.get(Organisation, int(org_id)) if org_id.isdigit() else None
    if org is None:
        return []
    names = [username for username, _ in directory.holders(s, org.code, role)]
    return list(s.execute(select(User).where(User.username.in_(names)).order_by(User.id)).scalars())


def task_people(s: Session, row: HumanTask) -> list[User]:
    """Whoever the task waits for: its assignee, or everyone who may claim it."""
    if row.assignee_id is not None:
        return _active(s, {row.assignee_id})
    return holders_of_key(s, row.candidate_key)


def _nearest_holders(s: Session, chain: list[int], role: str) -> list[User]:
    for org_id in chain:
        ids = set(
            s.execute(
                select(Membership.user_id).where(Membership.org_id == org_id, Membership.role == role)
            ).scalars()
        )
        people = _active(s, ids)
        if people:
            return people
    return []


def supervisors(s: Session, row: HumanTask, exclude: set[int]) -> list[User]:
    """The supervisors of the task's lane, by the rule in this module's docstring."""
    rules: list[tuple[list[int], str]] = []
    pool = directory.read_key(row.candidate_key)
    if isinstance(pool, tuple) and row.lane in directory.ROLES:
        rules.append((directory.ancestors(s, pool[0])[1:], pool[1]))
    chain = directory.ancestors(s, row.org_id)
    rules += [(chain, role) for role in SUPERVISOR_FALLBACK]
    for orgs, role in rules:
        people = [u for u in _nearest_holders(s, orgs, role) if u.id not in exclude]
        if people:
            return people
    return []


# --- what -------------------------------------------------------------------------------------------


def dedupe_key(kind: str, row: HumanTask) -> str:
    assert row.due_at is not None
    return (
        f"{kind}:{row.id}:{row.due_at.astimezone(UTC).isoformat()}"  # one spelling, whatever the session zone
    )


def beijing(value: datetime | None) -> str:
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M") if value else "—"


def notice_text(kind: str, row: HumanTask, instance_title: str | None) -> str:
    """The sentence e-mails and chat messages carry (the in-app list renders its own, translated)."""
    due = beijing(row.due_at)
    where = f"（{instance_title}）" if instance_title else ""
    if kind == REMINDER:
        return f"待办任务“{row.title}”{where}将于 {due} 到期，请及时办理。"
    if kind == OVERDUE:
        return f"待办任务“{row.title}”{where}已于 {due} 逾期，请尽快办理。"
    return f"待办任务“{row.title}”{where}已于 {due} 逾期未办，已提请您督办。"


def _notify(
    s: Session, users: list[User], kind: str, row: HumanTask, instance: Instance, now: datetime
) -> list[User]:
    """Insert the notices not yet sent; return who got one now (the dedupe key keeps it to once)."""
    key = dedupe_key(kind, row)
    ids = {u.id for u in users}
    done = (
        set(
            s.execute(
                select(Notification.user_id).where(
                    Notification.dedupe_key == key, Notification.user_id.in_(ids)
                )
            ).scalars()
        )
        if ids
        else set()
    )
    fresh = [u for u in users if u.id not in done]
    body = notice_text(kind, row, instance.title)
    for user in fresh:
        s.add(
            Notification(
                user_id=user.id,
                kind=kind,
                title=row.title[:300],
                body=body,
                instance_id=row.instance_id,
                task_id=row.id,
                dedupe_key=key,
                created_at=now,
            )
        )
    return fresh


def _send_later(
    s: Session, kind: str, row: HumanTask, fresh: list[User], channels: Channels, now: datetime
) -> None:
    """One delivery job per configured channel for the notices just written."""
    if not fresh:
        return
    for channel in channels.outbound:
        if channel == "email" and not any(u.email for u in fresh):
            continue
        s.add(Job(instance_id=row.instance_id, kind=f"{channel}:{kind}", task_guid=row.task_guid, due_at=now))


def _event(row: HumanTask, action: str, payload: dict[str, object]) -> audit.PendingEvent:
    return audit.PendingEvent(
        actor=SYSTEM,
        action=action,
        instance_id=row.instance_id,
        task_guid=row.task_guid,
        org_id=row.org_id,
        payload={"task": row.id, "title": row.title, "due_at": row.due_at} | payload,
    )


def _names(users: list[User]) -> list[str]:
    return [u.username for u in users]


def remind(s: Session, row: HumanTask, now: datetime, channels: Channels) -> None:
    """Ahead of the due date: tell the task's people, once per due date."""
    instance = s.get(Instance, row.instance_id)
    people = task_people(s, row)
    fresh = _notify(s, people, REMINDER, row, instance, now)
    _send_later(s, REMINDER, row, fresh, channels, now)
    assignee = s.get(User, row.assignee_id).username if row.assignee_id else None
    event = _event(
        row,
        "task.reminder",
        {
            "notice": REMINDER,
            "assignee": assignee,
            "candidates": row.candidate_key,
            "recipients": _names(fresh),
        },
    )
    audit.append(s, [event], now)


def escalate(s: Session, row: HumanTask, now: datetime, channels: Channels) -> None:
    """At or after the due date: tell the task's people it is overdue, mark it, tell the supervisors."""
    instance = s.get(Instance, row.instance_id)
    people = task_people(s, row)
    overdue = _notify(s, people, OVERDUE, row, instance, now)
    bosses = supervisors(s, row, {u.id for u in people})
    told = _notify(s, bosses, ESCALATION, row, instance, now)
    _send_later(s, OVERDUE, row, overdue, channels, now)
    _send_later(s, ESCALATION, row, told, channels, now)
    events = []
    assignee = s.get(User, row.assignee_id).username if row.assignee_id else None
    events.append(
        _event(
            row,
            "task.reminder",
            {
                "notice": OVERDUE,
                "assignee": assignee,
                "candidates": row.candidate_key,
                "recipients": _names(overdue),
            },
        )
    )
    if row.escalated_at is None:
        row.escalated_at = now
        events.append(
            _event(row, "task.escalated", {"supervisors": _names(bosses), "notified": _names(told)})
        )
    audit.append(s, events, now)


# --- delivery ------------------------------------------------------------------------------------


def is_delivery(kind: str) -> bool:
    return kind.partition(":")[0] in CHANNELS


@dataclass(frozen=True)
class Outgoing:
    """One notice to send: its text, the people it goes to and a link to the task."""

    kind: str
    subject: str
    text: str
    recipients: list[tuple[str, str, str | None]]  # username, display name, e-mail
    task_id: int
    instance_id: int
    link: str | None


def deliver(engine: Engine, lease: Lease, now: datetime, worker: str) -> None:
    """Send one delivery job's notices, then mark it done. Raises on failure, so the job backs off."""
    channel, _, kind = lease.kind.partition(":")
    outgoing = _outgoing(engine, lease, kind, worker)
    if outgoing is not None:
        if channel == "email":
            send_email(engine.channels, outgoing)
        else:
            post_webhook(engine.channels, outgoing)
    with engine.db.write() as s:
        s.execute(
            update(Job)
            .where(Job.id == lease.id, Job.state == "pending", Job.lease_owner == worker)
            .values(state="done", attempts=Job.attempts + 1)
        )


def _outgoing(engine: Engine, lease: Lease, kind: str, worker: str) -> Outgoing | None:
    """What to send; None when there is nothing (the lease was lost, or the task was done meanwhile)."""
    with engine.db.read() as s:
        job = s.get(Job, lease.id)
        if job is None or job.state != "pending" or job.lease_owner != worker:
            return None
        row = s.execute(
            select(HumanTask).where(
                HumanTask.instance_id == lease.instance_id, HumanTask.task_guid == lease.task_guid
            )
        ).scalar_one_or_none()
        if row is None or row.state != "open" or row.due_at is None:
            return None  # a reminder of finished work is only noise
        users = s.execute(
            select(User)
            .join(Notification, Notification.user_id == User.id)
            .where(Notification.task_id == row.id, Notification.dedupe_key == dedupe_key(kind, row))
            .order_by(User.id)
        ).scalars()
        instance = s.get(Instance, row.instance_id)
        base = engine.channels.base_url
        return Outgoing(
            kind=kind,
            subject=f"【旗帜】{_SUBJECTS.get(kind, '待办提醒')}：{row.title}",
            text=notice_text(kind, row, instance.title if instance else None),
            recipients=[(u.username, u.display_name, u.email) for u in users],
            task_id=row.id,
            instance_id=row.instance_id,
            link=f"{base}/notifications" if base else None,
        )


_SUBJECTS = {REMINDER: "待办即将到期", OVERDUE: "待办已逾期", ESCALATION: "逾期督办"}


class DeliveryFailed(RuntimeError):
    """A channel refused or did not answer; the job is retried, then becomes an incident."""


def send_email(channels: Channels, out: Outgoing) -> None:
    """One message to everyone with an address, over one SMTP session with a timeout."""
    smtp = channels.smtp
    if smtp is None:
        raise DeliveryFailed("e-mail is not configured in this worker (QIZHI_SMTP_HOST)")
    to = [email for _, _, email in out.recipients if email]
    if not to:
        return
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = out.subject, smtp.sender, ", ".join(to)
    message.set_content(
        out.text + (f"\n\n{out.link}" if out.link else "") + "\n\n—— 旗帜党建流程平台（系统邮件，请勿回复）"
    )
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if smtp.tls == "ssl":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=channels.timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=channels.timeout)
    with client:
        if smtp.tls == "starttls":
            client.starttls(context=context)
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        refused = client.send_message(message, to_addrs=to)
    if refused:
        raise DeliveryFailed(f"the mail server refused {', '.join(sorted(refused))}")


def webhook_body(out: Outgoing) -> dict[str, object]:
    """A text message in the shape WeCom/DingTalk/Feishu-style robots accept, plus Qizhi's own fields."""
    names = "、".join(display for _, display, _ in out.recipients)
    content = out.text + (f"\n提醒对象：{names}" if names else "") + (f"\n{out.link}" if out.link else "")
    return {
        "msgtype": "text",
        "text": {"content": content},
        "qizhi": {
            "kind": out.kind,
            "task": out.task_id,
            "instance": out.instance_id,
            "recipients": [username for username, _, _ in out.recipients],
        },
    }


def post_webhook(channels: Channels, out: Outgoing) -> None:
    """POST the message as JSON; a non-2xx answer, or a robot's non-zero ``errcode``, is a failure."""
    if not channels.webhook_url:
        raise DeliveryFailed("the webhook is not configured in this worker (QIZHI_WEBHOOK_URL)")
    data = json.dumps(webhook_body(out), ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(
        channels.webhook_url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    with urllib.request.urlopen(request, timeout=channels.timeout) as response:  # noqa: S310 (configured URL)
        answer = response.read(65536)
    try:
        parsed = json.loads(answer) if answer else None
    except ValueError:
        return
    if isinstance(parsed, dict) and parsed.get("errcode") not in (None, 0):
        raise DeliveryFailed(
            f"the webhook answered errcode {parsed.get('errcode')}: {parsed.get('errmsg', '')}"
        )
