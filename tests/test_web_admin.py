"""Organisations and people (/admin) and the ``qizhi user`` commands: admins only, every change audited.

Runs on SQLite and on PostgreSQL (QIZHI_TEST_DATABASE_URL). The roll import has its own file.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from engine import Engine
from engine.directory import add_org, add_user, grant
from engine.models import AuditEvent, GroupMember, Membership, Organisation, User
from tests.helpers import files, inbox_of, only_task
from tests.web import PASSWORD, csrf, post, sign_in
from web.cli import cli
from web.passwords import hash_password


@pytest.fixture
def admin(web_app: Flask, engine: Engine) -> FlaskClient:
    """A client signed in as ``admin``, who holds the admin role in HQ."""
    with engine.db.write() as s:
        add_user(s, "admin", "系统管理员").password_hash = hash_password(PASSWORD)
        grant(s, "admin", "HQ", "admin")
    return sign_in(web_app, "admin")


def ids(engine: Engine) -> dict[str, int]:
    with engine.db.read() as s:
        orgs = {c: i for c, i in s.execute(select(Organisation.code, Organisation.id))}
        users = {n: i for n, i in s.execute(select(User.username, User.id))}
    return {**{f"org:{k}": v for k, v in orgs.items()}, **{f"user:{k}": v for k, v in users.items()}}


def last_seq(engine: Engine) -> int:
    with engine.db.read() as s:
        return s.execute(select(func.coalesce(func.max(AuditEvent.seq), 0))).scalar_one()


def events_since(engine: Engine, seq: int) -> list[AuditEvent]:
    with engine.db.read() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)))


def one_event(engine: Engine, seq: int, action: str) -> AuditEvent:
    found = [e for e in events_since(engine, seq) if e.action == action]
    assert len(found) == 1, [(e.action, e.payload) for e in events_since(engine, seq)]
    assert found[0].actor == "admin"
    return found[0]


def user_row(engine: Engine, username: str) -> User:
    with engine.db.read() as s:
        return s.execute(select(User).where(User.username == username)).scalar_one()


def attempt_sign_in(app: Flask, username: str, password: str = PASSWORD) -> int:
    client = app.test_client()
    form = {"username": username, "password": password, "csrf_token": csrf(client)}
    return client.post("/login", data=form).status_code


def text(response: Any) -> str:
    return response.get_data(as_text=True)


# --- who may ------------------------------------------------------------------------------------------


def admin_urls(app: Flask, engine: Engine) -> list[tuple[str, str]]:
    """(method, url) of every admin endpoint, with real ids so a missing check would act."""
    known = ids(engine)
    with engine.db.read() as s:
        membership = s.scalars(
            select(Membership.id).where(Membership.user_id == known["user:member1"])
        ).first()
    values = {"org_id": known["org:B2"], "user_id": known["user:member1"], "membership_id": membership}
    urls = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.endpoint.startswith("admin."):
                url = app.url_for(rule.endpoint, **{a: values[a] for a in rule.arguments})
                urls += [(m, url) for m in sorted(rule.methods or ()) if m in ("GET", "POST")]
    return urls


@pytest.mark.parametrize("username", ["sec1", "office", "auditor", "outsider"])
def test_every_admin_endpoint_refuses_everyone_but_admins(
    web_app: Flask, engine: Engine, username: str
) -> None:
    client = sign_in(web_app, username)
    before = last_seq(engine)
    urls = admin_urls(web_app, engine)
    assert len(urls) >= 20, urls

    for method, url in urls:
        form = {"name": "x", "code": "X1", "kind": "group", "username": "newbie", "display_name": "新人",
                "password": "long enough pw", "password2": "long enough pw", "org": "1", "role": "admin",
                "group": "finance"}  # fmt: skip
        response = client.get(url) if method == "GET" else post(client, url, form)
        assert response.status_code == 403, (method, url, response.status_code)

    assert [e.action for e in events_since(engine, before)] == []  # sign-in events came before `before`
    assert user_row(engine, "member1").active


def test_signed_out_visitors_are_sent_to_sign_in(web_app: Flask, engine: Engine) -> None:
    client = web_app.test_client()
    for method, url in admin_urls(web_app, engine):
        response = client.get(url) if method == "GET" else client.post(url)
        assert response.status_code in (302, 400), (method, url)  # a POST without CSRF stops even earlier


def test_admin_sees_the_section_in_the_navigation(web_app: Flask, admin: FlaskClient) -> None:
    assert 'data-section="admin.orgs"' in text(admin.get("/"))
    assert 'data-section="admin.orgs"' not in text(sign_in(web_app, "sec1").get("/"))


def test_a_post_without_the_csrf_token_is_refused(admin: FlaskClient, engine: Engine) -> None:
    before = last_seq(engine)
    response = admin.post(
        "/admin/orgs", data={"code": "B3", "name": "第三党支部", "kind": "branch", "parent": ""}
    )
    assert response.status_code == 400
    deactivate = admin.post(f"/admin/users/{ids(engine)['user:member1']}/deactivate")
    assert deactivate.status_code == 400
    assert events_since(engine, before) == [] and user_row(engine, "member1").active


# --- organisations ------------------------------------------------------------------------------------


def test_the_tree_nests_organisations_with_their_member_counts(admin: FlaskClient) -> None:
    page = text(admin.get("/admin/orgs"))
    # B1G1 sits in B1's list, before B1's <li> closes; B2 is B1's sibling
    assert re.search(
        r'data-org="HQ".*data-org="B1".*data-org="B1G1".*</li>\s*</ul>\s*</li>.*data-org="B2"', page, re.S
    )
    # B1: sec1, member1, member2 directly; HQ counts everyone below it too (13 people with a role)
    members = dict(re.findall(r'data-org="([^"]+)">.*?data-members="(\d+)"', page, re.S))
    assert members == {"HQ": "8", "B1": "3", "B1G1": "0", "B2": "2"}
    assert "共 13 人" in page


def test_adding_an_organisation_under_a_fitting_parent_is_audited(admin: FlaskClient, engine: Engine) -> None:
    before = last_seq(engine)
    b1 = ids(engine)["org:B1"]
    response = post(
        admin, "/admin/orgs", {"parent": b1, "kind": "group", "code": "B1G2", "name": "第二党小组"}
    )

    assert response.status_code == 302
    with engine.db.read() as s:
        org = s.execute(select(Organisation).where(Organisation.code == "B1G2")).scalar_one()
    assert (org.parent_id, org.kind, org.name) == (b1, "group", "第二党小组")
    assert response.headers["Location"].endswith(f"/admin/orgs/{org.id}")
    event = one_event(engine, before, "org_added")
    assert event.org_id == org.id
    assert event.payload == {"code": "B1G2", "name": "第二党小组", "kind": "group", "parent": "B1"}


@pytest.mark.parametrize(
    ("parent", "kind", "code", "message"),
    [
        ("HQ", "group", "G9", "不能设立"),  # a group belongs under a branch
        ("B1G1", "group", "G9", "不能设立"),  # nothing under a group
        ("", "branch", "B9", "不能设立"),  # the top is a committee
        ("HQ", "branch", "B1", "已被使用"),  # code taken
        ("HQ", "branch", "有 空格", "组织编码只能"),
        ("HQ", "castle", "C9", "未知的组织类型"),
    ],
)
def test_an_organisation_that_does_not_fit_is_refused_and_the_form_kept(
    admin: FlaskClient, engine: Engine, parent: str, kind: str, code: str, message: str
) -> None:
    before = last_seq(engine)
    parent_id = ids(engine)[f"org:{parent}"] if parent else ""
    response = post(admin, "/admin/orgs", {"parent": parent_id, "kind": kind, "code": code, "name": "新组织"})

    assert response.status_code == 422 and message in text(response)
    assert 'value="新组织"' in text(response)
    assert events_since(engine, before) == []
    with engine.db.read() as s:
        assert s.execute(select(func.count(Organisation.id))).scalar_one() == 4


def test_renaming_an_organisation_is_audited(admin: FlaskClient, engine: Engine) -> None:
    before = last_seq(engine)
    b2 = ids(engine)["org:B2"]
    assert post(admin, f"/admin/orgs/{b2}/rename", {"name": "第二党支部（机关）"}).status_code == 302
    event = one_event(engine, before, "org_renamed")
    assert event.payload == {"code": "B2", "old_name": "第二党支部", "new_name": "第二党支部（机关）"}
    assert event.org_id == b2
    assert "第二党支部（机关）" in text(admin.get("/admin/orgs"))


def test_an_organisation_with_members_cannot_be_removed_and_the_page_says_why(
    admin: FlaskClient, engine: Engine
) -> None:
    before = last_seq(engine)
    b1 = ids(engine)["org:B1"]
    page = text(admin.get(f"/admin/orgs/{b1}"))
    assert "data-not-removable" in page and "3 名成员" in page and "1 个下级组织" in page

    response = post(admin, f"/admin/orgs/{b1}/remove")
    assert response.status_code == 302
    assert "不能删除" in text(admin.get(response.headers["Location"]))
    assert events_since(engine, before) == [] and "org:B1" in ids(engine)


def test_an_empty_organisation_can_be_removed(admin: FlaskClient, engine: Engine) -> None:
    b1 = ids(engine)["org:B1"]
    post(admin, "/admin/orgs", {"parent": b1, "kind": "group", "code": "B1G9", "name": "临时小组"})
    before = last_seq(engine)
    org_id = ids(engine)["org:B1G9"]

    assert post(admin, f"/admin/orgs/{org_id}/remove").headers["Location"].endswith("/admin/orgs")
    assert "org:B1G9" not in ids(engine)
    assert one_event(engine, before, "org_removed").payload["code"] == "B1G9"


def test_unknown_ids_are_404_for_admins_too(admin: FlaskClient) -> None:
    assert admin.get("/admin/orgs/999999").status_code == 404
    assert admin.get("/admin/users/999999").status_code == 404
    assert post(admin, "/admin/users/999999/deactivate").status_code == 404


# --- people -------------------------------------------------------------------------------------------


def test_adding_a_person_with_a_role_is_audited_twice(admin: FlaskClient, engine: Engine) -> None:
    before = last_seq(engine)
    b2 = ids(engine)["org:B2"]
    form = {"username": "zhang.san", "display_name": "张三", "email": "zs@example.cn", "org": b2,
            "role": "party_member"}  # fmt: skip
    response = post(admin, "/admin/users", form)

    assert response.status_code == 302
    person = user_row(engine, "zhang.san")
    assert (person.display_name, person.email, person.active, person.password_hash) == (
        "张三",
        "zs@example.cn",
        True,
        None,
    )
    assert [e.action for e in events_since(engine, before)] == ["user_added", "role_granted"]
    assert one_event(engine, before, "user_added").payload == {
        "username": "zhang.san", "display_name": "张三", "email": "zs@example.cn"
    }  # fmt: skip
    granted = one_event(engine, before, "role_granted")
    assert granted.org_id == b2 and granted.payload == {
        "username": "zhang.san",
        "org": "B2",
        "role": "party_member",
    }
    detail = text(admin.get(response.headers["Location"]))
    assert "未设密码" in detail and 'data-role="B2:party_member"' in detail


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"username": "ab", "display_name": "太短"}, "用户名须为"),
        ({"username": "王五", "display_name": "中文名"}, "用户名须为"),
        ({"username": "good.name", "display_name": "  "}, "请填写名称"),
        ({"username": "member1", "display_name": "重名"}, "已存在"),
        ({"username": "MEMBER1", "display_name": "大小写"}, "已存在"),
        ({"username": "good.name", "display_name": "张三", "email": "not-an-email"}, "邮箱格式"),
        ({"username": "good.name", "display_name": "张三", "role": "party_member"}, "同时选择组织和角色"),
    ],
)
def test_a_bad_person_is_refused_with_the_reason_and_nothing_written(
    admin: FlaskClient, engine: Engine, form: dict[str, str], message: str
) -> None:
    before = last_seq(engine)
    response = post(admin, "/admin/users", form)
    assert response.status_code == 422 and message in text(response)
    assert events_since(engine, before) == []
    with engine.db.read() as s:
        assert s.execute(select(func.count(User.id))).scalar_one() == 14


def test_the_user_list_searches_and_pages(admin: FlaskClient, engine: Engine) -> None:
    with engine.db.write() as s:
        for n in range(60):
            add_user(s, f"bulk{n:03d}", f"批量{n}")

    first = text(admin.get("/admin/users"))
    assert 'data-total="74"' in first and first.count("<tr data-username=") == 50 and 'rel="next"' in first
    second = text(admin.get("/admin/users?page=2"))
    assert second.count("<tr data-username=") == 24 and 'data-username="sec1"' in second
    found = text(admin.get("/admin/users?q=党员"))
    assert re.findall(r'<tr data-username="([^"]+)"', found) == ["member1", "member2", "member3"]
    assert 'data-total="0"' in text(admin.get("/admin/users?q=%25"))  # LIKE wildcards are literal
    assert admin.get("/admin/users?page=abc").status_code == 200


def test_setting_a_password_lets_the_person_sign_in_and_never_records_it(
    admin: FlaskClient, web_app: Flask, engine: Engine
) -> None:
    post(admin, "/admin/users", {"username": "lisi", "display_name": "李四"})
    uid = ids(engine)["user:lisi"]
    assert attempt_sign_in(web_app, "lisi", "new secret 123") == 401
    before = last_seq(engine)

    short = post(admin, f"/admin/users/{uid}/password", {"password": "short", "password2": "short"})
    assert "至少需要 8 个字符" in text(admin.get(short.headers["Location"]))
    post(admin, f"/admin/users/{uid}/password", {"password": "new secret 123", "password2": "other 12345"})
    assert events_since(engine, before) == []

    post(admin, f"/admin/users/{uid}/password", {"password": "new secret 123", "password2": "new secret 123"})
    event = one_event(engine, before, "password_set")
    assert event.payload == {"username": "lisi"}
    assert "secret" not in str(event.payload) and user_row(engine, "lisi").password_hash not in str(
        event.payload
    )
    assert attempt_sign_in(web_app, "lisi", "new secret 123") == 302


def test_a_deactivated_person_cannot_sign_in_until_reactivated(
    admin: FlaskClient, web_app: Flask, engine: Engine
) -> None:
    member = sign_in(web_app, "member1")
    uid = ids(engine)["user:member1"]
    before = last_seq(engine)

    assert post(admin, f"/admin/users/{uid}/deactivate").status_code == 302
    assert one_event(engine, before, "user_deactivated").payload == {"username": "member1"}
    assert attempt_sign_in(web_app, "member1") == 401
    assert member.get("/").status_code == 302  # the open session ended too
    assert "已停用" in text(admin.get(f"/admin/users/{uid}"))

    post(admin, f"/admin/users/{uid}/reactivate")
    assert one_event(engine, before, "user_reactivated").payload == {"username": "member1"}
    assert attempt_sign_in(web_app, "member1") == 302


def test_an_admin_cannot_lock_themselves_out(admin: FlaskClient, engine: Engine) -> None:
    me = ids(engine)["user:admin"]
    before = last_seq(engine)
    post(admin, f"/admin/users/{me}/deactivate")
    with engine.db.read() as s:
        mine = s.scalars(select(Membership.id).where(Membership.user_id == me)).one()
    response = post(admin, f"/admin/users/{me}/roles/{mine}/revoke")

    assert "不能撤销自己唯一的系统管理员角色" in text(admin.get(response.headers["Location"]))
    assert events_since(engine, before) == [] and user_row(engine, "admin").active
    assert admin.get("/admin/orgs").status_code == 200


def test_unlocking_a_locked_account_is_audited(admin: FlaskClient, web_app: Flask, engine: Engine) -> None:
    with engine.db.write() as s:
        person = s.execute(select(User).where(User.username == "sec2")).scalar_one()
        person.locked_until, person.failed_logins = datetime.now(UTC) + timedelta(minutes=10), 0
    assert attempt_sign_in(web_app, "sec2") == 401
    uid = ids(engine)["user:sec2"]
    assert 'data-state="locked"' in text(admin.get(f"/admin/users/{uid}"))
    assert 'data-username="sec2"' in text(admin.get("/admin/users?status=locked"))
    before = last_seq(engine)

    post(admin, f"/admin/users/{uid}/unlock")

    event = one_event(engine, before, "user_unlocked")
    assert event.payload["username"] == "sec2" and event.payload["locked_until"]
    assert user_row(engine, "sec2").locked_until is None
    assert attempt_sign_in(web_app, "sec2") == 302


def test_roles_and_groups_are_granted_revoked_joined_and_left(admin: FlaskClient, engine: Engine) -> None:
    known = ids(engine)
    uid, b2 = known["user:member3"], known["org:B2"]
    before = last_seq(engine)

    post(admin, f"/admin/users/{uid}/roles", {"org": b2, "role": "branch_secretary"})
    again = post(admin, f"/admin/users/{uid}/roles", {"org": b2, "role": "branch_secretary"})
    assert "已担任这一角色" in text(admin.get(again.headers["Location"]))
    post(admin, f"/admin/users/{uid}/roles", {"org": b2, "role": "king"})
    granted = one_event(engine, before, "role_granted")
    assert granted.org_id == b2
    assert granted.payload == {"username": "member3", "org": "B2", "role": "branch_secretary"}

    with engine.db.read() as s:
        membership = s.scalars(
            select(Membership.id).where(Membership.user_id == uid, Membership.role == "branch_secretary")
        ).one()
    post(admin, f"/admin/users/{uid}/roles/{membership}/revoke")
    assert one_event(engine, before, "role_revoked").payload["role"] == "branch_secretary"
    other = ids(engine)["user:member1"]
    assert post(admin, f"/admin/users/{other}/roles/{membership}/revoke").status_code == 404

    post(admin, f"/admin/users/{uid}/groups", {"group": "宣传组"})
    refused = post(admin, f"/admin/users/{uid}/groups", {"group": "party_member"})
    assert "是角色名称" in text(admin.get(refused.headers["Location"]))
    assert one_event(engine, before, "group_joined").payload == {"username": "member3", "group": "宣传组"}
    assert 'data-group="宣传组"' in text(admin.get(f"/admin/users/{uid}"))
    post(admin, f"/admin/users/{uid}/groups/leave", {"group": "宣传组"})
    assert one_event(engine, before, "group_left").payload == {"username": "member3", "group": "宣传组"}
    with engine.db.read() as s:
        assert s.scalars(select(GroupMember).where(GroupMember.user_id == uid)).all() == []
    assert [e.action for e in events_since(engine, before)] == [
        "role_granted", "role_revoked", "group_joined", "group_left"
    ]  # fmt: skip


def test_editing_a_profile_records_what_changed(admin: FlaskClient, engine: Engine) -> None:
    uid = ids(engine)["user:member2"]
    before = last_seq(engine)
    post(admin, f"/admin/users/{uid}/profile", {"display_name": "党员乙（改）", "email": "yi@example.cn"})
    post(admin, f"/admin/users/{uid}/profile", {"display_name": "党员乙（改）", "email": "yi@example.cn"})

    event = one_event(engine, before, "user_updated")  # the second save changed nothing: no event
    assert event.payload == {
        "username": "member2",
        "changes": {"display_name": ["党员乙", "党员乙（改）"], "email": [None, "yi@example.cn"]},
    }


# --- the same from the command line -----------------------------------------------------------------


def run(app: Flask, *args: str, **kwargs: Any) -> Any:
    return app.test_cli_runner().invoke(cli, list(args), **kwargs)


def test_cli_sets_a_password_from_a_prompt_or_the_environment(web_app: Flask, engine: Engine) -> None:
    before = last_seq(engine)
    prompted = run(web_app, "user", "password", "member2", input="typed twice 1\ntyped twice 1\n")
    assert prompted.exit_code == 0, prompted.output
    assert "typed twice 1" not in prompted.output
    assert attempt_sign_in(web_app, "member2", "typed twice 1") == 302

    scripted = run(web_app, "user", "password", "member3", env={"QIZHI_NEW_PASSWORD": "from the env"})
    assert scripted.exit_code == 0 and attempt_sign_in(web_app, "member3", "from the env") == 302

    short = run(web_app, "user", "password", "member3", env={"QIZHI_NEW_PASSWORD": "short"})
    assert short.exit_code != 0 and "at least 8" in short.output
    assert "no user 'ghost'" in run(web_app, "user", "password", "ghost").output
    events = [
        (e.actor, e.action, e.payload) for e in events_since(engine, before) if e.action == "password_set"
    ]
    assert events == [
        ("cli", "password_set", {"username": "member2"}),
        ("cli", "password_set", {"username": "member3"}),
    ]


def test_cli_directory_changes_are_audited_as_cli(web_app: Flask, engine: Engine) -> None:
    before = last_seq(engine)
    env = {"QIZHI_NEW_PASSWORD": "first admin pw"}
    assert run(web_app, "org", "add", "B3", "第三党支部", "--parent", "HQ").exit_code == 0
    boss = ("user", "add", "boss", "--name", "管理员", "--org", "HQ", "--role", "admin", "--password")
    added = run(web_app, *boss, env=env)
    assert added.exit_code == 0, added.output
    assert run(web_app, "user", "grant", "member1", "--org", "B3", "--role", "masses").exit_code == 0
    assert run(web_app, "user", "revoke", "member1", "--org", "B3", "--role", "masses").exit_code == 0
    assert run(web_app, "user", "deactivate", "member1").exit_code == 0
    assert run(web_app, "user", "reactivate", "member1").exit_code == 0
    with engine.db.write() as s:
        s.execute(select(User).where(User.username == "sec2")).scalar_one().failed_logins = 3
    assert run(web_app, "user", "unlock", "sec2").exit_code == 0
    refused = run(web_app, "org", "add", "G1", "小组", "--parent", "HQ", "--kind", "group")
    assert refused.exit_code != 0 and "cannot sit under committee" in refused.output

    events = events_since(engine, before)
    assert {e.actor for e in events} == {"cli"}
    assert [e.action for e in events] == [
        "org_added", "user_added", "role_granted", "password_set", "role_granted", "role_revoked",
        "user_deactivated", "user_reactivated", "user_unlocked",
    ]  # fmt: skip
    assert events[0].payload == {"code": "B3", "name": "第三党支部", "kind": "branch", "parent": "HQ"}
    assert attempt_sign_in(web_app, "boss", "first admin pw") == 302


def test_moving_an_organisation_reroutes_its_pool_tasks_and_refuses_cycles_and_misfits(
    admin: FlaskClient, engine: Engine
) -> None:
    with engine.db.write() as s:  # a second committee with its own party office
        add_org(s, "HQ2", "第二公司党委", None, "committee")
        add_user(s, "office2", "二公司党建工作部")
        grant(s, "office2", "HQ2", "party_office")
    engine.deploy(files("approval.bpmn", "apply.json", "review.json"), "designer")
    inst = engine.start("approval", "sec1", "B1", {"title": "红旗党建"})
    engine.complete(
        only_task(engine, "sec1").id, "sec1", {"title": "红旗党建", "problems": ["组织生活不规范"]}
    )
    check = only_task(engine, "office")  # offered to the party office above B1
    known = ids(engine)
    url = f"/admin/orgs/{known['org:B1']}"
    assert "调整上级组织" in admin.get(url).get_data(as_text=True)

    for bad, reason in (
        (known["org:B1G1"], "不能把组织移到它自己或它的下级组织之下"),
        (known["org:B2"], "不能设立这一类型"),
    ):
        refused = post(admin, f"{url}/move", {"parent_id": str(bad)}, follow_redirects=True)
        assert reason in refused.get_data(as_text=True)
    seq = last_seq(engine)
    assert post(admin, f"{url}/move", {"parent_id": str(known["org:HQ2"])}).status_code == 302

    with engine.db.read() as s:
        assert s.get(Organisation, known["org:B1"]).parent_id == known["org:HQ2"]
    assert one_event(engine, seq, "org_moved").payload == {
        "code": "B1",
        "from": "HQ",
        "to": "HQ2",
        "rerouted_tasks": 1,
    }
    assert [t.id for t in inbox_of(engine, "office2")] == [check.id]
    assert [t for t in inbox_of(engine, "office") if t.instance_id == inst.id] == []
    assert post(admin, f"{url}/move", {"parent_id": "x"}).status_code == 400
