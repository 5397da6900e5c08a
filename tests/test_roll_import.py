"""Member rolls from .xlsx: reading (pure), planning against the directory, and the two-step import page.

Every workbook is built here with openpyxl. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from engine import Engine
from engine.audit import verify
from engine.directory import add_user, grant
from engine.models import AuditEvent, GroupMember, Membership, Organisation, User
from engine.roll import MAX_ROWS, RollRejected, parse_roll, plan_roll
from tests.web import PASSWORD, post, sign_in
from web import roll_uploads
from web.passwords import hash_password

HEADERS = ["用户名", "姓名", "组织编码", "角色", "小组", "邮箱"]


def workbook(
    rows: list[list[Any]], headers: list[str] | None = HEADERS, above: list[list[Any]] = ()
) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for line in above:
        sheet.append(line)
    if headers is not None:
        sheet.append(headers)
    for row in rows:
        sheet.append(row)
    out = BytesIO()
    book.save(out)
    return out.getvalue()


def problems(parsed: Any) -> dict[int, list[tuple[str, str | None]]]:
    return {r.row: [(p.reason, p.column) for p in r.problems] for r in parsed.rows if r.problems}


def rejected(data: bytes) -> str:
    with pytest.raises(RollRejected) as caught:
        parse_roll(data)
    return caught.value.reason


# --- reading ----------------------------------------------------------------------------------------


def test_a_chinese_roll_reads_roles_by_label_or_key_and_splits_lists() -> None:
    data = workbook(
        [
            ["wangfang", "王芳", "B1", "支部书记", "宣传组、财务组", "wf@example.cn"],
            ["ｌｉｕｙａｎｇ", " 刘洋 ", "B1", "party_member，群众代表", None, None],
            [10023, "工号用户", "B2", "Party_Member", "", ""],
            [None, None, None, None, None, None],  # blank rows are skipped, not reported
        ]
    )
    parsed = parse_roll(data)

    assert parsed.sha256 == hashlib.sha256(data).hexdigest()
    assert [
        (r.row, r.username, r.display_name, r.org_code, r.roles, r.groups, r.email) for r in parsed.rows
    ] == [
        (2, "wangfang", "王芳", "B1", ["branch_secretary"], ["宣传组", "财务组"], "wf@example.cn"),
        (3, "liuyang", "刘洋", "B1", ["party_member", "masses"], [], None),
        (4, "10023", "工号用户", "B2", ["party_member"], [], None),
    ]
    assert problems(parsed) == {}


def test_english_headers_a_title_line_and_unknown_columns() -> None:
    data = workbook(
        [["zhaolei", "赵磊", "B2", "branch_secretary", "finance", "zl@example.cn", "备注"]],
        headers=["Username", "Name", "Org code", "Role", "Groups", "E-mail", "备注列"],
        above=[["第二党支部党员花名册"], []],
    )
    parsed = parse_roll(data)
    assert [(r.row, r.username, r.roles, r.groups) for r in parsed.rows] == [
        (4, "zhaolei", ["branch_secretary"], ["finance"])
    ]
    assert parsed.ignored_headers == ["备注列"]
    # "（必填）" and "*" decorations on headers are fine too
    decorated = workbook(
        [["abc", "甲", "B1", "党员"]], headers=["用户名（必填）", "*姓名", "组织编码", "角色"]
    )
    assert parse_roll(decorated).rows[0].username == "abc"


def test_each_bad_row_says_which_row_and_why() -> None:
    data = workbook(
        [
            ["ok.user", "好人", "B1", "党员", "", ""],  # row 2
            ["noname", "", "B1", "党员", "", ""],  # row 3
            ["badrole", "坏角色", "B1", "书记", "", ""],  # row 4
            ["dup", "甲", "B1", "党员", "", ""],  # row 5
            ["DUP", "乙", "B2", "党员", "", ""],  # row 6
            ["x", "太短", "B1", "党员", "", ""],  # row 7
            ["mail", "邮件", "B1", "党员", "", "not-mail"],  # row 8
            ["grp", "小组", "B1", "", "admin", ""],  # row 9
            ["", "无名", "", "党员", "", ""],  # row 10
            ["long", "长" * 201, "B1", "党员", "", ""],  # row 11
        ]
    )
    assert problems(parse_roll(data)) == {
        3: [("missing", "display_name")],
        4: [("bad_role", "role")],
        5: [("duplicate_username", "username")],
        6: [("duplicate_username", "username")],
        7: [("bad_username", "username")],
        8: [("bad_email", "email")],
        9: [("missing", "role"), ("group_is_role", "groups")],
        10: [("missing", "username"), ("missing", "org")],
        11: [("too_long", "display_name")],
    }
    dup = next(r for r in parse_roll(data).rows if r.row == 5)
    assert dup.problems[0].params == {"rows": "5、6"}


def test_files_that_are_no_roll_are_refused_whole() -> None:
    assert rejected("username,name\nabc,甲\n".encode()) == "not_xlsx"
    docx = BytesIO()
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<document/>")
    assert rejected(docx.getvalue()) == "not_xlsx"
    assert rejected(b"PK\x03\x04" + b"\0" * (2 * 1024 * 1024)) == "file_too_large"
    assert (
        rejected(workbook([["abc", "甲", "B1", "党员"]], headers=["用户名", "姓名", "角色"]))
        == "missing_columns"
    )
    assert (
        rejected(workbook([["abc", "甲"]], headers=["用户名", "姓名", "组织编码", "姓名"]))
        == "duplicate_column"
    )
    assert rejected(workbook([["abc", "甲", "B1"]], headers=None)) == "no_header"
    assert rejected(workbook([])) == "empty"
    damaged = bytearray(workbook([["abc", "甲", "B1", "党员"]]))
    start = damaged.index(b"xl/worksheets/sheet1.xml") + 30
    damaged[start : start + 200] = b"\xff" * 200
    assert rejected(bytes(damaged)) == "unreadable"


def test_a_zip_that_unpacks_into_too_much_is_refused_before_parsing() -> None:
    bomb = BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/sharedStrings.xml", b"\0" * (51 * 1024 * 1024))
    assert len(bomb.getvalue()) < 1024 * 1024
    assert rejected(bomb.getvalue()) == "file_too_large"


def test_more_rows_than_allowed_are_refused() -> None:
    rows = [[f"user{n:05d}", "某", "B1", "党员"] for n in range(MAX_ROWS + 1)]
    assert rejected(workbook(rows, headers=HEADERS[:4])) == "too_many_rows"


# --- planning against the directory -----------------------------------------------------------------


def test_the_plan_tells_new_from_known_people(engine: Engine) -> None:
    with engine.db.write() as s:
        s.execute(select(User).where(User.username == "member3")).scalar_one().active = False
    data = workbook(
        [
            ["newbie", "新人", "B1", "党员", "", ""],  # 2 create
            ["member1", "党员甲", "B1", "党员", "finance", ""],  # 3 nothing new
            ["member2", "党员乙", "B1", "党员、群众代表", "", ""],  # 4 one role to add
            ["sec2", "王二", "B2", "支部书记", "", ""],  # 5 same person, another name
            ["member3", "党员丙", "B2", "党员", "", ""],  # 6 deactivated
            ["Sec1", "一支部书记", "B1", "支部书记", "", ""],  # 7 case differs from sec1
            ["ghost", "幽灵", "B9", "党员", "", ""],  # 8 no such org
        ]
    )
    with engine.db.read() as s:
        plan = plan_roll(s, parse_roll(data))

    assert [(p.row.row, p.status) for p in plan.rows] == [
        (2, "create"), (3, "unchanged"), (4, "update"), (5, "name_conflict"), (6, "error"), (7, "error"),
        (8, "error"),
    ]  # fmt: skip
    assert plan.rows[2].add_roles == ["masses"]
    assert [p.reason for p in plan.rows[4].problems] == ["user_inactive"]
    assert [p.reason for p in plan.rows[5].problems] == ["username_case"]
    assert [(p.reason, p.params) for p in plan.rows[6].problems] == [("unknown_org", {"value": "B9"})]
    assert (plan.importable(False), plan.importable(True)) == (2, 3)


# --- the import pages ---------------------------------------------------------------------------------


@pytest.fixture
def admin(web_app: Flask, engine: Engine) -> FlaskClient:
    with engine.db.write() as s:
        add_user(s, "admin", "系统管理员").password_hash = hash_password(PASSWORD)
        grant(s, "admin", "HQ", "admin")
    return sign_in(web_app, "admin")


def upload(client: FlaskClient, data: bytes, filename: str = "花名册.xlsx") -> Any:
    return post(client, "/admin/import", {"roll": (BytesIO(data), filename)})


def form_of(preview: Any) -> dict[str, str]:
    html = preview.get_data(as_text=True)
    token = re.search(r'name="token" value="([^"]+)"', html)
    sha = re.search(r'name="sha256" value="([^"]+)"', html)
    assert token and sha, html[:2000]
    return {"token": token.group(1), "sha256": sha.group(1)}


def directory_counts(engine: Engine) -> tuple[int, int, int, int]:
    with engine.db.read() as s:
        return tuple(  # type: ignore[return-value]
            s.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (User, Membership, GroupMember, AuditEvent)
        )


MIXED = [
    ["wangfang", "王芳", "B1", "支部书记", "宣传组", "wf@example.cn"],  # 2 new
    ["liuyang", "刘洋", "B2", "党员", "", ""],  # 3 new
    ["member2", "党员乙", "B1", "群众代表", "", ""],  # 4 adds a role
    ["sec2", "王二", "B2", "党员", "", ""],  # 5 name differs
    ["badrole", "坏角色", "B1", "书记", "", ""],  # 6 error
    ["ghost", "幽灵", "B9", "党员", "", ""],  # 7 error
    ["", "无名", "B1", "党员", "", ""],  # 8 error
]


def test_preview_then_import_writes_the_valid_rows_in_one_audited_go(
    admin: FlaskClient, engine: Engine
) -> None:
    data = workbook(MIXED)
    before = directory_counts(engine)

    preview = upload(admin, data)
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200
    statuses = dict(re.findall(r'data-row="(\d+)" data-status="(\w+)"', html))
    assert statuses == {"2": "create", "3": "create", "4": "update", "5": "name_conflict", "6": "error",
                        "7": "error", "8": "error"}  # fmt: skip
    assert "未知的角色“书记”" in html and "没有编码为“B9”的组织" in html and "用户名：必填" in html
    assert 'data-importable="3"' in html and "系统中：二支部书记" in html
    assert directory_counts(engine) == before  # the preview changed nothing

    result = post(admin, "/admin/import/confirm", form_of(preview))
    page = result.get_data(as_text=True)

    assert result.status_code == 200
    assert re.findall(r'data-count="(\w+)"[^>]*><span class="n">(\d+)', page) == [
        ("created", "2"), ("updated", "1"), ("unchanged", "0"), ("skipped", "4")
    ]  # fmt: skip
    assert sorted(re.findall(r'<tr data-row="(\d+)"', page)) == ["5", "6", "7", "8"]
    with engine.db.read() as s:
        wang = s.execute(select(User).where(User.username == "wangfang")).scalar_one()
        assert (wang.display_name, wang.email, wang.password_hash) == ("王芳", "wf@example.cn", None)
        assert (
            s.execute(select(User.display_name).where(User.username == "sec2")).scalar_one() == "二支部书记"
        )
        assert (
            s.execute(select(func.count(User.id)).where(User.username.in_(["badrole", "ghost"]))).scalar()
            == 0
        )
        events = list(
            s.scalars(select(AuditEvent).where(AuditEvent.seq > before[3]).order_by(AuditEvent.seq))
        )
        b1 = s.execute(select(Organisation.id).where(Organisation.code == "B1")).scalar_one()
    assert [(e.action, e.payload.get("row")) for e in events] == [
        ("user_added", 2), ("role_granted", 2), ("group_joined", 2), ("user_added", 3), ("role_granted", 3),
        ("role_granted", 4), ("roll_imported", None),
    ]  # fmt: skip
    assert {e.actor for e in events} == {"admin"}
    assert events[1].org_id == b1 and events[1].payload["role"] == "branch_secretary"
    summary = events[-1].payload
    assert summary["sha256"] == hashlib.sha256(data).hexdigest() and summary["filename"] == "花名册.xlsx"
    assert (summary["created"], summary["updated"], summary["skipped"], summary["skipped_rows"]) == (
        2,
        1,
        4,
        [5, 6, 7, 8],
    )

    again = post(admin, "/admin/import/confirm", form_of(preview))  # the upload is used up
    assert again.status_code == 409 and "重新上传" in again.get_data(as_text=True)


def test_the_confirm_checks_the_roll_again_against_changes_since_the_preview(
    admin: FlaskClient, engine: Engine
) -> None:
    preview = upload(
        admin, workbook([["zhaoliu", "赵六", "B1", "党员", "", ""], ["sunqi", "孙七", "B2", "党员"]])
    )
    assert 'data-status="create"' in preview.get_data(as_text=True)
    with engine.db.write() as s:  # meanwhile someone adds zhaoliu by hand, and B2 is renamed away
        add_user(s, "zhaoliu", "赵六")
        s.execute(select(Organisation).where(Organisation.code == "B2")).scalar_one().code = "B2-OLD"

    result = post(admin, "/admin/import/confirm", form_of(preview))
    page = result.get_data(as_text=True)

    assert result.status_code == 200 and "没有编码为“B2”的组织" in page
    assert re.findall(r'data-count="(\w+)"[^>]*><span class="n">(\d+)', page)[:2] == [
        ("created", "0"),
        ("updated", "1"),
    ]
    with engine.db.read() as s:
        roles = s.execute(
            select(Membership.role)
            .join(User, User.id == Membership.user_id)
            .where(User.username == "zhaoliu")
        ).scalars()
        assert list(roles) == ["party_member"]
        assert s.execute(select(func.count(User.id)).where(User.username == "sunqi")).scalar_one() == 0
        assert verify(s).ok


def test_a_person_under_another_name_is_renamed_only_when_asked(admin: FlaskClient, engine: Engine) -> None:
    preview = upload(admin, workbook([["sec2", "王二", "B2", "党员", "", ""]]))
    post(admin, "/admin/import/confirm", form_of(preview) | {"on_name_conflict": "update"})

    with engine.db.read() as s:
        assert s.execute(select(User.display_name).where(User.username == "sec2")).scalar_one() == "王二"
        updated = s.scalars(select(AuditEvent).where(AuditEvent.action == "user_updated")).one()
    assert updated.payload == {
        "username": "sec2", "changes": {"display_name": ["二支部书记", "王二"]}, "source": "roll", "row": 2
    }  # fmt: skip


def test_a_file_changed_after_the_preview_imports_nothing(
    admin: FlaskClient, web_app: Flask, engine: Engine
) -> None:
    preview = upload(admin, workbook(MIXED))
    form = form_of(preview)
    before = directory_counts(engine)
    stored = Path(web_app.instance_path) / roll_uploads.FOLDER / f"{form['token']}.xlsx"
    stored.write_bytes(workbook([["mallory", "坏人", "HQ", "系统管理员", "", ""]]))

    response = post(admin, "/admin/import/confirm", form)

    assert response.status_code == 409 and "被改动" in response.get_data(as_text=True)
    assert directory_counts(engine) == before


def test_a_preview_whose_hash_the_browser_changed_imports_nothing(admin: FlaskClient, engine: Engine) -> None:
    form = form_of(upload(admin, workbook(MIXED)))
    before = directory_counts(engine)
    response = post(admin, "/admin/import/confirm", form | {"sha256": "0" * 64})
    assert response.status_code == 409 and directory_counts(engine) == before


def test_an_expired_preview_imports_nothing_and_is_removed(
    admin: FlaskClient, web_app: Flask, engine: Engine
) -> None:
    form = form_of(upload(admin, workbook(MIXED)))
    before = directory_counts(engine)
    note = Path(web_app.instance_path) / roll_uploads.FOLDER / f"{form['token']}.json"
    meta = json.loads(note.read_text(encoding="utf-8"))
    note.write_text(
        json.dumps(meta | {"created": meta["created"] - roll_uploads.TTL_SECONDS - 1}), encoding="utf-8"
    )

    response = post(admin, "/admin/import/confirm", form)

    assert response.status_code == 409 and "失效" in response.get_data(as_text=True)
    assert directory_counts(engine) == before
    assert not note.exists()


def test_another_admins_preview_cannot_be_confirmed(
    admin: FlaskClient, web_app: Flask, engine: Engine
) -> None:
    form = form_of(upload(admin, workbook(MIXED)))
    with engine.db.write() as s:
        add_user(s, "admin2", "管理员二").password_hash = hash_password(PASSWORD)
        grant(s, "admin2", "HQ", "admin")
    other = sign_in(web_app, "admin2")
    before = directory_counts(engine)

    response = post(other, "/admin/import/confirm", form)
    assert response.status_code == 409 and directory_counts(engine) == before
    assert (
        post(other, "/admin/import/confirm", {"token": "../../secret_key", "sha256": ""}).status_code == 409
    )


def test_uploads_that_are_not_rolls_are_explained(admin: FlaskClient) -> None:
    csv = upload(admin, b"username,name\n", "roll.csv")
    assert csv.status_code == 422 and "只接受 Excel 工作簿" in csv.get_data(as_text=True)
    fake = upload(admin, b"not a zip", "roll.xlsx")
    assert fake.status_code == 422 and "只接受 Excel 工作簿" in fake.get_data(as_text=True)
    headless = upload(admin, workbook([["a", "b"]], headers=["用户名", "姓名"]))
    assert headless.status_code == 422 and "缺少必填列：组织编码、角色" in headless.get_data(as_text=True)
    missing = post(admin, "/admin/import", {})
    assert missing.status_code == 422 and "请选择" in missing.get_data(as_text=True)


def test_the_template_opens_with_the_chinese_headers_and_imports_when_filled(
    admin: FlaskClient, engine: Engine
) -> None:
    response = admin.get("/admin/import/template.xlsx")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert "attachment" in response.headers["Content-Disposition"]

    book = openpyxl.load_workbook(BytesIO(response.data))
    assert book.sheetnames == ["花名册", "说明", "组织编码"]
    assert [c.value for c in book["花名册"][1]] == HEADERS
    assert ["B1", "第一党支部", "党支部"] in [[c.value for c in row] for row in book["组织编码"].iter_rows()]

    book["花名册"].append(["zhouqiang", "周强", "B1G1", "党员", "", ""])
    filled = BytesIO()
    book.save(filled)
    result = post(admin, "/admin/import/confirm", form_of(upload(admin, filled.getvalue())))
    assert result.status_code == 200
    with engine.db.read() as s:
        assert (
            s.execute(
                select(Organisation.code)
                .join(Membership, Membership.org_id == Organisation.id)
                .join(User, User.id == Membership.user_id)
                .where(User.username == "zhouqiang")
            ).scalar_one()
            == "B1G1"
        )
