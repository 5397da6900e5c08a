"""Member rolls (花名册) from .xlsx: read, check against the directory, import in one transaction.

Organisations keep their rolls in spreadsheets, so this is how people arrive in bulk. Reading is
pure (bytes in, rows with per-row problems out) and refuses what could exhaust the host: files over
2 MB, packages that unpack past 50 MB, more than 5,000 rows. Checking and importing run against a
Session: :func:`plan_roll` says what each row would do, :func:`import_roll` re-plans inside the
caller's write transaction (the directory may have changed since the preview), writes the valid rows
with the audit events of :mod:`engine.directory`, and skips and reports the others.
The import only adds: people, roles and groups missing from the directory; it never revokes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from io import BytesIO
from typing import Any

import openpyxl
from openpyxl.styles import Font
from openpyxl.worksheet.datavalidation import DataValidation
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import audit
from engine.directory import (
    ORG_KINDS,
    ROLES,
    DirectoryRefused,
    display_name_problem,
    email_problem,
    group_joined_event,
    group_problem,
    role_granted_event,
    user_added_event,
    user_updated_event,
    username_problem,
)
from engine.models import GroupMember, Membership, Organisation, User

MAX_BYTES = 2 * 1024 * 1024
MAX_UNPACKED = 50 * 1024 * 1024
MAX_PARTS = 500
MAX_ROWS = 5000
MAX_COLUMNS = 50
CELL_MAX = 200
HEADER_SEARCH = 20  # rows looked at for the header: rolls often start with a title line
SHEET_NAMES = ("花名册", "roll")
_CHUNK = 500  # names per IN (...) look-up


@dataclass(frozen=True)
class Column:
    key: str
    header: str  # the Chinese header the template writes
    aliases: tuple[str, ...]
    required: bool
    note: str  # what the template's instructions say about it


COLUMNS = (
    Column(
        "username",
        "用户名",
        ("username", "user", "login", "账号", "登录名"),
        True,
        "登录名：3–64 位英文字母、数字或 . _ -，每人一行，不可重复",
    ),
    Column("display_name", "姓名", ("name", "displayname", "fullname"), True, "显示的姓名"),
    Column(
        "org",
        "组织编码",
        ("org", "orgcode", "organisation", "organization", "organisationcode", "organizationcode"),
        True,
        "角色所在组织的编码，见“组织编码”表",
    ),
    Column(
        "role",
        "角色",
        ("role", "roles"),
        True,
        "支部书记、党员等（中文名称或英文键均可），多个角色用顿号或逗号分隔",
    ),
    Column("groups", "小组", ("group", "groups"), False, "可选：普通分组名，多个用顿号或逗号分隔"),
    Column("email", "邮箱", ("email", "mail"), False, "可选"),
)
_LIST_SPLIT = re.compile(r"[、,，;；\n]+")
_ROLE_SPLIT = re.compile(r"[、,，;；\s]+")


def _header_key(text: str) -> str:
    """'用户名（必填）', ' User Name* ', 'E-mail' → comparable keys."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\(.*?\)", "", text)
    return re.sub(r"[\s_\-*:]", "", text)


_HEADERS = {_header_key(alias): c.key for c in COLUMNS for alias in (c.header, c.key, *c.aliases)}
_ROLE_NAMES = {key: key for key in ROLES} | {label: key for key, label in ROLES.items()}


class RollRejected(DirectoryRefused):
    """The file as a whole cannot be read as a roll (not .xlsx, too big, no header): nothing is planned."""

    code = "roll_rejected"


@dataclass
class Problem:
    """Why a row cannot be imported: a stable reason (shown translated), the column, and message values."""

    reason: str
    column: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RollRow:
    row: int  # the spreadsheet's row number, as the person sees it in Excel
    username: str = ""
    display_name: str = ""
    org_code: str = ""
    roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    email: str | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class ParsedRoll:
    rows: list[RollRow]
    sha256: str
    sheet: str
    ignored_headers: list[str] = field(default_factory=list)


# --- reading: bytes → rows ---------------------------------------------------------------------------


def parse_roll(data: bytes) -> ParsedRoll:
    """Read the roll sheet (named 花名册, else the first) of an .xlsx file, with each row's own problems."""
    if len(data) > MAX_BYTES:
        raise RollRejected("file_too_large", "the file is larger than 2 MB", limit_mb=MAX_BYTES // 2**20)
    _check_package(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about extensions it drops; none matter here
        try:
            book = openpyxl.load_workbook(BytesIO(data), read_only=True, data_only=True)
        except Exception as err:  # openpyxl raises many kinds on a damaged file
            raise RollRejected("unreadable", f"the file cannot be read as a workbook: {err}") from err
        try:
            sheet = next((book[n] for n in SHEET_NAMES if n in book.sheetnames), book.worksheets[0])
            rows = _read(sheet.iter_rows(max_col=MAX_COLUMNS, values_only=True))
            parsed = ParsedRoll(rows=[], sha256=hashlib.sha256(data).hexdigest(), sheet=sheet.title)
            parsed.rows, parsed.ignored_headers = rows
        except RollRejected:
            raise
        except Exception as err:
            raise RollRejected("unreadable", f"the file cannot be read as a workbook: {err}") from err
        finally:
            book.close()
    if not parsed.rows:
        raise RollRejected("empty", "the roll has a header but no rows")
    _mark_duplicates(parsed.rows)
    return parsed


def _check_package(data: bytes) -> None:
    """An .xlsx is a zip of XML parts: refuse other files, and zips that would unpack into gigabytes."""
    try:
        package = zipfile.ZipFile(BytesIO(data))
    except zipfile.BadZipFile as err:
        raise RollRejected("not_xlsx", "not an .xlsx file (save it as an Excel workbook)") from err
    with package:
        parts = package.infolist()
        names = {p.filename for p in parts}
        if "xl/workbook.xml" not in names or "[Content_Types].xml" not in names:
            raise RollRejected("not_xlsx", "not an .xlsx file (save it as an Excel workbook)")
        if len(parts) > MAX_PARTS or sum(p.file_size for p in parts) > MAX_UNPACKED:
            raise RollRejected("file_too_large", "the workbook unpacks to too much data", limit_mb=2)


def _read(values: Iterator[tuple[Any, ...]]) -> tuple[list[RollRow], list[str]]:
    header_at, columns, ignored = _find_header(values)
    rows: list[RollRow] = []
    for number, cells in enumerate(values, start=header_at + 1):
        if number - header_at > 2 * MAX_ROWS:  # blank but formatted rows still cost reading
            raise RollRejected("too_many_rows", "the roll has too many rows", limit=MAX_ROWS)
        record = {key: _text(cells[i]) if i < len(cells) else "" for i, key in columns.items()}
        if not any(record.values()):
            continue
        if len(rows) == MAX_ROWS:
            raise RollRejected("too_many_rows", f"the roll has more than {MAX_ROWS} rows", limit=MAX_ROWS)
        rows.append(_row(number, record))
    return rows, ignored


def _find_header(values: Iterator[tuple[Any, ...]]) -> tuple[int, dict[int, str], list[str]]:
    """The first row naming at least two known columns; a title line above it is skipped."""
    for number, cells in enumerate(values, start=1):
        if number > HEADER_SEARCH:
            break
        texts = [_text(c) for c in cells]
        known = [(i, _HEADERS.get(_header_key(t))) for i, t in enumerate(texts) if t]
        columns: dict[int, str] = {}
        for i, key in known:
            if key is None:
                continue
            if key in columns.values():
                header = next(c.header for c in COLUMNS if c.key == key)
                raise RollRejected("duplicate_column", f"two columns are '{header}'", header=header)
            columns[i] = key
        if len(columns) < 2:
            continue
        missing = [c.header for c in COLUMNS if c.required and c.key not in columns.values()]
        if missing:
            raise RollRejected(
                "missing_columns", f"missing columns: {', '.join(missing)}", columns="、".join(missing)
            )
        return number, columns, [texts[i] for i, key in known if key is None]
    raise RollRejected("no_header", "no header row (用户名, 姓名, 组织编码, 角色) in the first rows")


def _text(value: Any) -> str:
    """A cell as text: 10023.0 typed into a username column means '10023'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def _ascii(text: str) -> str:
    """Full-width letters and digits typed with a Chinese input method become ASCII."""
    return unicodedata.normalize("NFKC", text).strip()


def _row(number: int, record: dict[str, str]) -> RollRow:
    row = RollRow(number)
    problems = row.problems
    for key, text in record.items():
        if len(text) > CELL_MAX:
            problems.append(Problem("too_long", key, {"limit": CELL_MAX}))
            record[key] = ""
    row.username = _ascii(record.get("username", ""))
    row.display_name = record.get("display_name", "")
    row.org_code = _ascii(record.get("org", ""))
    row.email = _ascii(record.get("email", "")) or None
    for key, value in (("username", row.username), ("display_name", row.display_name), ("org", row.org_code)):
        if not value and not any(p.column == key for p in problems):
            problems.append(Problem("missing", key))
    if row.username and username_problem(row.username):
        problems.append(Problem("bad_username", "username", {"value": row.username}))
    if row.display_name and display_name_problem(row.display_name):
        problems.append(Problem("too_long", "display_name", {"limit": CELL_MAX}))
    if email_problem(row.email):
        problems.append(Problem("bad_email", "email", {"value": row.email}))
    row.roles = _roles(_ascii(record.get("role", "")), problems)
    row.groups = _groups(record.get("groups", ""), problems)
    return row


def _roles(text: str, problems: list[Problem]) -> list[str]:
    roles: list[str] = []
    for token in filter(None, _ROLE_SPLIT.split(text)):
        key = _ROLE_NAMES.get(token) or _ROLE_NAMES.get(token.lower())
        if key is None:
            problems.append(Problem("bad_role", "role", {"value": token}))
        elif key not in roles:
            roles.append(key)
    if not text and not any(p.column == "role" for p in problems):
        problems.append(Problem("missing", "role"))
    return roles


def _groups(text: str, problems: list[Problem]) -> list[str]:
    groups: list[str] = []
    for group in (g.strip() for g in _LIST_SPLIT.split(text)):
        if not group or group in groups:
            continue
        reason = group_problem(group)
        if reason:
            problems.append(Problem(reason, "groups", {"value": group}))
        else:
            groups.append(group)
    return groups


def _mark_duplicates(rows: list[RollRow]) -> None:
    """Every row of a username that appears twice is refused: which one is right is not ours to guess."""
    seen: dict[str, list[RollRow]] = {}
    for row in rows:
        if row.username:
            seen.setdefault(row.username.lower(), []).append(row)
    for same in seen.values():
        if len(same) > 1:
            numbers = "、".join(str(r.row) for r in same)
            for row in same:
                row.problems.append(Problem("duplicate_username", "username", {"rows": numbers}))


# --- planning: rows against the directory ---------------------------------------------------------

CREATE, UPDATE, UNCHANGED, NAME_CONFLICT, ERROR = "create", "update", "unchanged", "name_conflict", "error"


@dataclass
class PlannedRow:
    """What importing one row would do; ``problems`` are the row's own plus the directory's."""

    row: RollRow
    status: str
    problems: list[Problem]
    user: User | None = None
    org: Organisation | None = None
    add_roles: list[str] = field(default_factory=list)
    add_groups: list[str] = field(default_factory=list)
    new_email: str | None = None  # set when the row changes the person's email


@dataclass
class RollPlan:
    rows: list[PlannedRow]

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    def importable(self, update_names: bool) -> int:
        """Rows that would change the directory (the number on the confirm button)."""
        wanted = {CREATE, UPDATE, NAME_CONFLICT} if update_names else {CREATE, UPDATE}
        return sum(1 for r in self.rows if r.status in wanted)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def plan_roll(s: Session, parsed: ParsedRoll) -> RollPlan:
    """What each row would do now: a handful of queries for the whole roll, not one per row."""
    codes = sorted({r.org_code for r in parsed.rows if r.org_code})
    orgs = {
        o.code: o
        for chunk in _chunks(codes)
        for o in s.scalars(select(Organisation).where(Organisation.code.in_(chunk)))
    }
    names = sorted({r.username.lower() for r in parsed.rows if r.username})
    users = {
        u.username.lower(): u
        for chunk in _chunks(names)
        for u in s.scalars(select(User).where(func.lower(User.username).in_(chunk)))
    }
    ids = [u.id for u in users.values()]
    held: set[tuple[int, int, str]] = set()
    grouped: set[tuple[int, str]] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        roles = select(Membership.user_id, Membership.org_id, Membership.role)
        held |= {(u, o, r) for u, o, r in s.execute(roles.where(Membership.user_id.in_(chunk)))}
        groups = select(GroupMember.user_id, GroupMember.group_name)
        grouped |= {(u, g) for u, g in s.execute(groups.where(GroupMember.user_id.in_(chunk)))}
    return RollPlan([_plan(row, orgs, users, held, grouped) for row in parsed.rows])


def _plan(
    row: RollRow,
    orgs: dict[str, Organisation],
    users: dict[str, User],
    held: set[tuple[int, int, str]],
    grouped: set[tuple[int, str]],
) -> PlannedRow:
    problems = list(row.problems)
    org = orgs.get(row.org_code)
    if row.org_code and org is None:
        problems.append(Problem("unknown_org", "org", {"value": row.org_code}))
    user = users.get(row.username.lower()) if row.username else None
    if user is not None and user.username != row.username:
        problems.append(Problem("username_case", "username", {"existing": user.username}))
    if user is not None and not user.active:
        problems.append(Problem("user_inactive", "username", {"value": user.username}))
    if problems:
        return PlannedRow(row, ERROR, problems, user, org)
    assert org is not None
    if user is None:
        return PlannedRow(row, CREATE, problems, None, org, row.roles, row.groups, row.email)
    plan = PlannedRow(
        row,
        UPDATE,
        problems,
        user,
        org,
        add_roles=[r for r in row.roles if (user.id, org.id, r) not in held],
        add_groups=[g for g in row.groups if (user.id, g) not in grouped],
        new_email=row.email if row.email and row.email != user.email else None,
    )
    if user.display_name != row.display_name:
        plan.status = NAME_CONFLICT
    elif not (plan.add_roles or plan.add_groups or plan.new_email):
        plan.status = UNCHANGED
    return plan


# --- importing ---------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    sha256: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[PlannedRow] = field(default_factory=list)  # rows with problems, or name conflicts kept
    events: int = 0


def import_roll(
    s: Session, actor: str, parsed: ParsedRoll, *, filename: str, update_names: bool
) -> ImportReport:
    """Apply every valid row in the caller's transaction and audit it: one event per change, tagged
    with the roll's row, then ``roll_imported`` with the counts and the file's SHA-256.

    ``update_names``: a row naming an existing person under another name renames them (True) or is
    skipped (False). Rows are written in bulk, three batched INSERTs rather than a round of checks
    and a flush per change (that took some 20 ms a row: minutes for a full roll). It is safe because
    the plan is made again here, inside this transaction, with the rules engine.directory applies to
    single changes; a concurrent writer still meets the unique constraints, and the whole import
    rolls back. The events come from the same builders as single changes.
    """
    plan = plan_roll(s, parsed)
    report = ImportReport(parsed.sha256)
    todo: list[PlannedRow] = []
    for p in plan.rows:
        if p.status == ERROR or (p.status == NAME_CONFLICT and not update_names):
            report.skipped.append(p)
        elif p.status == UNCHANGED:
            report.unchanged += 1
        else:
            todo.append(p)
    created = {
        p.row.row: User(username=p.row.username, display_name=p.row.display_name, email=p.row.email)
        for p in todo
        if p.user is None
    }
    s.add_all(created.values())
    s.flush()
    events: list[audit.PendingEvent] = []
    added: list[Membership | GroupMember] = []
    for p in todo:
        assert p.org is not None
        context = {"source": "roll", "row": p.row.row}
        user = p.user or created[p.row.row]
        if p.user is None:
            events.append(user_added_event(actor, user, **context))
            report.created += 1
        else:
            changes = _update(user, p.row.display_name if p.status == NAME_CONFLICT else None, p.new_email)
            if changes:
                events.append(user_updated_event(actor, user, changes, **context))
            report.updated += 1
        for role in p.add_roles:
            added.append(Membership(user_id=user.id, org_id=p.org.id, role=role))
            events.append(role_granted_event(actor, user, p.org, role, **context))
        for group in p.add_groups:
            added.append(GroupMember(user_id=user.id, group_name=group))
            events.append(group_joined_event(actor, user, group, **context))
    s.add_all(added)
    s.flush()
    summary = {
        "filename": filename,
        "sha256": parsed.sha256,
        "rows": len(parsed.rows),
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "skipped": len(report.skipped),
        "skipped_rows": [p.row.row for p in report.skipped][:200],
    }
    events.append(audit.PendingEvent(actor=actor, action="roll_imported", payload=summary))
    audit.append(s, events)
    report.events = len(events)
    return report


def _update(user: User, display_name: str | None, email: str | None) -> dict[str, list[str | None]]:
    """Set what the roll changes on a known person; returns the changes as user_updated records them."""
    changes: dict[str, list[str | None]] = {}
    if display_name is not None and display_name != user.display_name:
        changes["display_name"] = [user.display_name, display_name]
        user.display_name = display_name
    if email is not None and email != user.email:
        changes["email"] = [user.email, email]
        user.email = email
    return changes


# --- the template people fill in ---------------------------------------------------------------------


def template_workbook(orgs: Iterable[tuple[str, str, str]]) -> bytes:
    """An empty roll with the Chinese headers, a role drop-down, instructions, and the current org codes.

    ``orgs``: (code, name, kind) of every organisation, so whoever fills the roll can look codes up.
    """
    book = openpyxl.Workbook()
    roll = book.active
    assert roll is not None
    roll.title = SHEET_NAMES[0]
    roll.append([c.header for c in COLUMNS])
    for cell, width in zip(roll[1], (16, 12, 14, 22, 18, 26), strict=True):
        cell.font = Font(bold=True)
        roll.column_dimensions[cell.column_letter].width = width
    roll.freeze_panes = "A2"
    # A drop-down of the role names; free text stays allowed for "支部书记、党员" (several roles).
    choices = DataValidation(
        type="list", formula1='"' + ",".join(ROLES.values()) + '"', allow_blank=True, showErrorMessage=False
    )
    roll.add_data_validation(choices)
    role_column = roll.cell(1, 1 + [c.key for c in COLUMNS].index("role")).column_letter
    choices.add(f"{role_column}2:{role_column}{MAX_ROWS + 1}")

    notes = book.create_sheet("说明")
    notes.append(["列", "必填", "说明"])
    for c in COLUMNS:
        notes.append([c.header, "是" if c.required else "否", c.note])
    notes.append([])
    notes.append(["每行一人；最多 5000 行。已有用户只会补充缺少的角色、小组和邮箱，不会撤销已有角色。"])
    notes.append([])
    notes.append(["角色名称", "英文键"])
    for key, label in ROLES.items():
        notes.append([label, key])
    for cell in (notes["A1"], notes["B1"], notes["C1"]):
        cell.font = Font(bold=True)
    notes.column_dimensions["A"].width, notes.column_dimensions["C"].width = 18, 60

    codes = book.create_sheet("组织编码")
    codes.append(["组织编码", "名称", "类型"])
    for code, name, kind in orgs:
        codes.append([code, name, ORG_KINDS.get(kind, kind)])
    codes.column_dimensions["A"].width, codes.column_dimensions["B"].width = 16, 24

    out = BytesIO()
    book.save(out)
    return out.getvalue()
