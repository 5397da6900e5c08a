"""The public pledge board (挂牌亮诺) and the masses' supervision feedback (群众监督). No Flask.

What the public sees is built here from an explicit allow-list: the post (党员责任岗), the member's
display name, the approved pledges (category, target, measure, deadline), whether each quarter was
reported, where and when the sign was hung, and the branch. Everything else in ``instance.data``
(usernames, peers, review comments and verdicts, ratings, scores, progress notes, anything a start
added) never leaves this module, because the views receive dataclasses, never the data dict.

A post is public once the cycle's 挂牌亮诺 step ran (its script sets ``published`` to true, and a
form can never set it: forms refuse undeclared fields), until it is withdrawn: the instance was
terminated or the 摘牌审议 decided 摘牌.

Feedback is anonymous. The sender's address is kept only as a keyed HMAC, enough to rate-limit
per address, never enough to recover the address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from engine import audit
from engine.directory import holds_role_above
from engine.errors import EngineError, NotFound, ValidationFailed
from engine.models import BoardFeedback, HumanTask, Instance, Organisation, User

PROCESS = "pledge_cycle"
REPORT_TASK = "ut_report"
WITHDRAWN_DECISION = "摘牌"
PUBLIC_PLEDGE_FIELDS = ("category", "target", "measure", "deadline")
MODERATOR_ROLES = ("branch_secretary", "party_office")
PUBLIC_ACTOR = "public"
MAX_ID = 2**63 - 1  # larger ids cannot exist; PostgreSQL would refuse to compare them

AUTHOR_MAX = 20
BODY_MIN = 5
BODY_MAX = 500
REASON_MAX = 200
# Bidirectional overrides and isolates make text display differently from what it says.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class RateLimited(EngineError):
    """Too much feedback from one address, or on one post, within a window; try again later."""

    code = "rate_limited"


@dataclass(frozen=True)
class Limits:
    """How much feedback one address may leave, and one post may receive, per window."""

    per_address_short: int = 3
    short_window: timedelta = timedelta(minutes=10)
    per_address_day: int = 20
    per_post_day: int = 200


LIMITS = Limits()


# --- the public read model -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pledge:
    category: str
    target: str
    measure: str
    deadline: str


@dataclass(frozen=True)
class Quarter:
    """One quarter's report status: reported, reported_late, overdue, open (due, not late) or upcoming."""

    number: int
    state: str


@dataclass(frozen=True)
class PostSign:
    """One post sign (党员责任岗标识牌) as the public may see it."""

    id: int
    year: int
    post: str
    member_name: str
    org_code: str
    org_name: str
    pledges: tuple[Pledge, ...]
    quarters: tuple[Quarter, ...]
    published_on: str | None
    sign_location: str | None


@dataclass(frozen=True)
class Branch:
    code: str
    name: str
    posts: int


@dataclass(frozen=True)
class PublicFeedback:
    """A visible feedback entry without its id, address hash or moderation state."""

    author: str | None
    body: str
    created_at: datetime


def _is_postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _json_equals(s: Session, key: str, value: bool | int) -> ColumnElement[bool]:
    """``data[key] == value`` without casts, so a stray non-number elsewhere never breaks the query."""
    field = Instance.data[key]
    if _is_postgres(s):  # ->> gives JSON's own text: 'true', '2026'
        return field.as_string() == (str(value).lower() if isinstance(value, bool) else str(value))
    return field.as_integer() == int(value)  # SQLite's json_extract gives 1 for true, 2026 for 2026


def _public(s: Session) -> list[ColumnElement[bool]]:
    """The one rule for "on the board": a published pledge cycle that was not withdrawn."""
    decision = Instance.data["delist_decision"].as_string()
    return [
        Instance.process_key == PROCESS,
        Instance.status != "terminated",
        _json_equals(s, "published", True),
        or_(decision.is_(None), decision != WITHDRAWN_DECISION),
    ]


def _in_year(s: Session, year: int) -> ColumnElement[bool]:
    return _json_equals(s, "year", year)


def years(s: Session) -> list[int]:
    """The years that have published posts, newest first."""
    field = Instance.data["year"].as_string() if _is_postgres(s) else Instance.data["year"].as_integer()
    found = s.execute(select(field).where(*_public(s)).group_by(field)).scalars()
    out = {_year(v) for v in found}
    return sorted((y for y in out if y is not None), reverse=True)


def branches(s: Session, year: int) -> list[Branch]:
    """Organisations with published posts in ``year``, by name."""
    rows = s.execute(
        select(Organisation.code, Organisation.name, func.count(Instance.id))
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(*_public(s), _in_year(s, year))
        .group_by(Organisation.code, Organisation.name)
        .order_by(Organisation.name)
    )
    return [Branch(code, name, count) for code, name, count in rows]


def branch_posts(s: Session, org_id: int, year: int, now: datetime) -> list[PostSign]:
    """A branch's published post signs for ``year``, by post name."""
    rows = s.execute(
        select(Instance, Organisation)
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(*_public(s), _in_year(s, year), Instance.org_id == org_id)
        .order_by(Instance.id)
    ).all()
    signs = _signs(s, rows, now)
    return sorted(signs, key=lambda p: (p.post, p.member_name))


def post(s: Session, instance_id: int, now: datetime) -> PostSign:
    """One public post sign; NotFound if it is not (or no longer) on the board."""
    if not 0 < instance_id <= MAX_ID:
        raise NotFound(f"no post {instance_id}")
    row = s.execute(
        select(Instance, Organisation)
        .join(Organisation, Organisation.id == Instance.org_id)
        .where(*_public(s), Instance.id == instance_id)
    ).first()
    if row is None:
        raise NotFound(f"no post {instance_id} on the board")
    return _signs(s, [row], now)[0]


def _signs(s: Session, rows: Sequence[tuple[Instance, Organisation]], now: datetime) -> list[PostSign]:
    ids = [inst.id for inst, _ in rows]
    due = _open_report_due(s, ids)
    names = _display_names(s, [inst.data or {} for inst, _ in rows])
    out = []
    for inst, org in rows:
        data = inst.data or {}
        out.append(
            PostSign(
                id=inst.id,
                year=_year(data.get("year")) or 0,
                post=_text(data.get("post"), 200) or "",
                member_name=_text(data.get("member_name"), 200) or names.get(str(data.get("member")), ""),
                org_code=org.code,
                org_name=org.name,
                pledges=tuple(_pledges(data.get("pledges"))),
                quarters=tuple(quarters(data, inst.id in due, due.get(inst.id), now)),
                published_on=_text(data.get("published_on"), 10),
                sign_location=_text(data.get("sign_location"), 200),
            )
        )
    return out


def _open_report_due(s: Session, instance_ids: list[int]) -> dict[int, datetime | None]:
    """For each instance with an open quarterly report task: when it is due."""
    if not instance_ids:
        return {}
    rows = s.execute(
        select(HumanTask.instance_id, func.min(HumanTask.due_at))
        .where(
            HumanTask.instance_id.in_(instance_ids),
            HumanTask.task_spec == REPORT_TASK,
            HumanTask.state == "open",
        )
        .group_by(HumanTask.instance_id)
    )
    return {instance_id: due for instance_id, due in rows}


def _display_names(s: Session, datas: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Display names for cycles started without ``member_name`` (only the username was given)."""
    wanted = {str(d["member"]) for d in datas if not d.get("member_name") and d.get("member")}
    if not wanted:
        return {}
    rows = s.execute(select(User.username, User.display_name).where(User.username.in_(wanted)))
    return {username: name for username, name in rows}


def quarters(
    data: dict[str, Any], report_open: bool, due_at: datetime | None, now: datetime
) -> list[Quarter]:
    """Each quarter's status, from the cycle's data and whether its report task is open.

    The cycle records each report as ``reports[] = {quarter, late}``, the quarter under way as
    ``quarter`` and the quarters that needed a reminder or a warning; a report task past its due
    date is late even before the reminder timer fired.
    """
    total = data.get("quarters")
    total = total if isinstance(total, int) and 1 <= total <= 12 else 4
    reported: dict[int, bool] = {}
    for report in data.get("reports") or []:
        if isinstance(report, dict) and isinstance(report.get("quarter"), int):
            reported[report["quarter"]] = bool(report.get("late"))
    chased = {
        q for q in [*(data.get("reminders") or []), *(data.get("warnings") or [])] if isinstance(q, int)
    }
    current = data.get("quarter") if isinstance(data.get("quarter"), int) else None
    out = []
    for number in range(1, total + 1):
        if number in reported:
            state = "reported_late" if reported[number] else "reported"
        elif number == current and (
            number in chased or (report_open and due_at is not None and due_at < now)
        ):
            state = "overdue"
        elif number == current and report_open:
            state = "open"
        else:
            state = "upcoming"
        out.append(Quarter(number, state))
    return out


def _pledges(value: Any) -> list[Pledge]:
    if not isinstance(value, list):
        return []
    out = []
    for item in value[:5]:
        if isinstance(item, dict):
            fields = {name: _text(item.get(name), 1000) or "" for name in PUBLIC_PLEDGE_FIELDS}
            out.append(Pledge(**fields))
    return out


def _text(value: Any, limit: int) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    return str(value)[:limit]


def _year(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


# --- feedback: rules ------------------------------------------------------------------------------


def clean_feedback(author: str | None, body: str | None) -> tuple[str | None, str]:
    """The trimmed name (None when empty) and message; ValidationFailed names each bad field.

    Error codes, not sentences, so the web layer says them in the reader's language: ``too_long``,
    ``too_short``, ``required``, ``control_characters``.
    """
    errors: dict[str, list[str]] = {}
    name = (author or "").strip()
    if _has_control(name, allow_newlines=False):
        errors["author"] = ["control_characters"]
    elif len(name) > AUTHOR_MAX:
        errors["author"] = ["too_long"]
    text = (body or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if _has_control(text, allow_newlines=True):
        errors["body"] = ["control_characters"]
    elif not text:
        errors["body"] = ["required"]
    elif len(text) < BODY_MIN:
        errors["body"] = ["too_short"]
    elif len(text) > BODY_MAX:
        errors["body"] = ["too_long"]
    if errors:
        raise ValidationFailed(errors)
    return name or None, text


def _is_control(c: str, allow_newlines: bool) -> bool:
    return (unicodedata.category(c) == "Cc" and not (allow_newlines and c in "\n\t")) or c in BIDI_CONTROLS


def _has_control(text: str, *, allow_newlines: bool) -> bool:
    return any(_is_control(c, allow_newlines) for c in text)


def without_controls(text: str, *, allow_newlines: bool) -> str:
    """The text with the characters :func:`clean_feedback` refuses taken out: what a refused form shows
    again, so the sender can fix the rest and send it without hunting for invisible characters."""
    return "".join(c for c in text if not _is_control(c, allow_newlines))


def address_hash(secret: str | bytes, address: str | None) -> str:
    """A keyed HMAC-SHA256 of the client address; an IPv6 address counts as its /64 network.

    One household or phone usually holds a whole IPv6 /64, so limiting single addresses there
    would limit nothing. The key is the app's secret: without it the hash cannot be reversed by
    trying all four billion IPv4 addresses.
    """
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    text = (address or "").strip()
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is None:
            text = str(ipaddress.ip_network(f"{parsed}/64", strict=False))
        elif isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            text = str(parsed.ipv4_mapped)
        else:
            text = str(parsed)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _check_limits(
    s: Session, instance_id: int, address: str, now: datetime, limits: Limits, adding: int
) -> None:
    """Raise RateLimited when a window's stored entries plus ``adding`` would pass its cap.

    Called with ``adding=1`` before inserting (a quick answer) and with ``adding=0`` after, once
    the audit chain's lock is held: concurrent posts queue on that lock, so the recount sees every
    committed post and the caps hold under races too.
    """

    def count(*where: ColumnElement[bool]) -> int:
        return s.execute(select(func.count()).select_from(BoardFeedback).where(*where)).scalar_one()

    day = now - timedelta(days=1)
    by_address = BoardFeedback.address_hash == address
    if (
        count(by_address, BoardFeedback.created_at > now - limits.short_window) + adding
        > limits.per_address_short
    ):
        raise RateLimited("too much feedback from this address just now", {"scope": "address_short"})
    if count(by_address, BoardFeedback.created_at > day) + adding > limits.per_address_day:
        raise RateLimited("too much feedback from this address today", {"scope": "address_day"})
    if count(BoardFeedback.instance_id == instance_id, BoardFeedback.created_at > day) + adding > (
        limits.per_post_day
    ):
        raise RateLimited("this post received too much feedback today", {"scope": "post_day"})


def post_feedback(
    s: Session,
    instance_id: int,
    author: str | None,
    body: str | None,
    address: str,
    now: datetime,
    limits: Limits = LIMITS,
) -> BoardFeedback:
    """Store one feedback entry on a public post and audit it (no body, no address in the audit).

    ``address`` is already the keyed hash (see :func:`address_hash`). Raises NotFound for a post
    that is not on the board, ValidationFailed for bad input, RateLimited over a cap; nothing is
    written then.
    """
    sign = post(s, instance_id, now)
    name, text = clean_feedback(author, body)
    _check_limits(s, sign.id, address, now, limits, adding=1)
    org_id = s.execute(select(Instance.org_id).where(Instance.id == sign.id)).scalar_one()
    entry = BoardFeedback(
        instance_id=sign.id, org_id=org_id, author=name, body=text, address_hash=address, created_at=now
    )
    s.add(entry)
    s.flush()
    audit.append(
        s,
        [
            audit.PendingEvent(
                actor=PUBLIC_ACTOR,
                action="feedback_posted",
                payload={"feedback_id": entry.id, "length": len(text)},
                instance_id=sign.id,
                org_id=org_id,
            )
        ],
        at=now,
    )
    _check_limits(s, sign.id, address, now, limits, adding=0)
    return entry


def visible_feedback(
    s: Session, instance_id: int, page: int = 1, per_page: int = 20
) -> tuple[list[PublicFeedback], int]:
    """A page of a post's visible feedback, newest first, and how many visible entries there are."""
    visible = and_(BoardFeedback.instance_id == instance_id, BoardFeedback.hidden.is_(False))
    total = s.execute(select(func.count()).select_from(BoardFeedback).where(visible)).scalar_one()
    rows = s.execute(
        select(BoardFeedback.author, BoardFeedback.body, BoardFeedback.created_at)
        .where(visible)
        .order_by(BoardFeedback.id.desc())
        .offset((max(page, 1) - 1) * per_page)
        .limit(per_page)
    )
    return [PublicFeedback(a, b, c) for a, b, c in rows], total


# --- feedback: moderation -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModerationEntry:
    """A feedback entry as its branch's moderators see it (never the address hash)."""

    id: int
    instance_id: int
    post: str
    member_name: str
    org_name: str
    author: str | None
    body: str
    created_at: datetime
    hidden: bool
    hidden_reason: str | None
    hidden_at: datetime | None
    hidden_by: str | None


def may_moderate(s: Session, user_id: int, org_id: int) -> bool:
    """The branch secretary of the post's branch, or the party office above it (or a secretary above)."""
    return holds_role_above(s, user_id, org_id, MODERATOR_ROLES)


def moderated_orgs(s: Session, user_id: int) -> list[int]:
    """The organisations with feedback that this user may moderate."""
    with_feedback = s.execute(select(BoardFeedback.org_id).distinct()).scalars()
    return [org for org in with_feedback if may_moderate(s, user_id, org)]


def moderation_list(
    s: Session, user_id: int, before: int | None = None, limit: int = 50
) -> list[ModerationEntry]:
    """Feedback in the user's organisations, hidden entries included, newest first (keyset by id)."""
    orgs = moderated_orgs(s, user_id)
    if not orgs:
        return []
    hider = User.__table__.alias("hider")
    query = (
        select(BoardFeedback, Instance.data, Organisation.name, hider.c.display_name)
        .join(Instance, Instance.id == BoardFeedback.instance_id)
        .join(Organisation, Organisation.id == BoardFeedback.org_id)
        .outerjoin(hider, hider.c.id == BoardFeedback.hidden_by_id)
        .where(BoardFeedback.org_id.in_(orgs))
        .order_by(BoardFeedback.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(BoardFeedback.id < min(before, MAX_ID))
    out = []
    for entry, data, org_name, hidden_by in s.execute(query):
        data = data or {}
        out.append(
            ModerationEntry(
                id=entry.id,
                instance_id=entry.instance_id,
                post=_text(data.get("post"), 200) or "",
                member_name=_text(data.get("member_name"), 200) or "",
                org_name=org_name,
                author=entry.author,
                body=entry.body,
                created_at=entry.created_at,
                hidden=entry.hidden,
                hidden_reason=entry.hidden_reason,
                hidden_at=entry.hidden_at,
                hidden_by=hidden_by,
            )
        )
    return out


def set_hidden(
    s: Session, feedback_id: int, moderator: User, hidden: bool, reason: str | None, now: datetime
) -> BoardFeedback:
    """Hide (with a reason) or unhide one entry, audited as feedback_hidden / feedback_unhidden.

    NotFound for an entry outside the moderator's organisations, so others cannot learn it exists.
    """
    entry = s.get(BoardFeedback, feedback_id) if 0 < feedback_id <= MAX_ID else None
    if entry is None or not may_moderate(s, moderator.id, entry.org_id):
        raise NotFound(f"no feedback {feedback_id}")
    text = (reason or "").strip()
    if _has_control(text, allow_newlines=False):
        raise ValidationFailed({"reason": ["control_characters"]})
    if len(text) > REASON_MAX:
        raise ValidationFailed({"reason": ["too_long"]})
    if hidden and not text:
        raise ValidationFailed({"reason": ["required"]})
    entry.hidden = hidden
    if hidden:
        entry.hidden_by_id, entry.hidden_at, entry.hidden_reason = moderator.id, now, text
    else:  # the audit trail keeps who hid it and why
        entry.hidden_by_id, entry.hidden_at, entry.hidden_reason = None, None, None
    s.flush()
    audit.append(
        s,
        [
            audit.PendingEvent(
                actor=moderator.username,
                action="feedback_hidden" if hidden else "feedback_unhidden",
                payload={"feedback_id": entry.id, "reason": text},
                instance_id=entry.instance_id,
                org_id=entry.org_id,
            )
        ],
        at=now,
    )
    return entry
