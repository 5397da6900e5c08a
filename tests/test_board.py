"""The public pledge board (挂牌亮诺) and masses' feedback (群众监督), driven through the web app.

Pledge cycles are walked to 挂牌亮诺 as the people their lanes name (helpers of
tests/test_pledge_cycle.py); the board is then read without signing in. Private values are seeded
on purpose (a phone number in the start data, an e-mail on the account, review comments, ratings
and notes from later stages) and looked for in every public page.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from engine import Engine
from engine import board as model
from engine.directory import add_user, grant, org_by_code
from engine.models import AuditEvent, BoardFeedback, Instance, User
from tests.helpers import assert_chain_intact, later
from tests.test_pledge_cycle import (
    PLEDGES,
    POSTS,
    PROCESS,
    PROGRESS,
    commit_and_approve,
    evaluate,
    pledge_files,
    publish,
    quarter,
    start_year,
    task_of,
)
from tests.web import csrf, sign_in
from web.formatting import BEIJING

YEAR = datetime.now(BEIJING).year  # the board shows this year unless asked for another
PHONE = "13987650042"
EMAIL = "member1.private@example.com"
RETURN_COMMENTS = ["退回意见甲仅内部可见", "退回意见乙仅内部可见"]
APPROVE_COMMENTS = ["审核意见一仅内部可见", "审核意见二仅内部可见", "审核意见三仅内部可见"]
REVIEW_COMMENT = "总体审核意见仅内部可见"
REVISION_NOTE = "修改说明仅内部可见"
DELIST_REASON = "摘牌审议理由仅内部可见"
PRIVATE = [
    PHONE,
    EMAIL,
    *RETURN_COMMENTS,
    *APPROVE_COMMENTS,
    REVIEW_COMMENT,
    REVISION_NOTE,
    DELIST_REASON,
    "全年承诺基本兑现",  # the year-end account (述诺)
    "帮扶对象调岗",  # a result note of the account
    "已学 3 次",  # a quarterly progress note
    "学习笔记.pdf",  # its evidence
    "第4季度讲评",  # the branch's last quarterly comment
    "进度正常",  # the half-year review
    "member1",  # usernames: the member, the peers, the secretary
    "member2",
    "member4",
    "sec1",
    "67.0",  # the weighted score of the 差 year below
]
BAD_YEAR = {"self": 80, "peer": 70, "masses": 60, "branch": 65}  # 67.0: 差, so 摘牌审议


@pytest.fixture
def pledge(engine: Engine) -> Engine:
    """The pledge cycle deployed; masses representatives and a third B1 member; member1 has an e-mail."""
    with engine.db.write() as s:
        add_user(s, "masses1", "群众代表甲")
        grant(s, "masses1", "B1", "masses")
        add_user(s, "member4", "党员丁")
        grant(s, "member4", "B1", "party_member")
        s.execute(update(User).where(User.username == "member1").values(email=EMAIL))
    engine.deploy(pledge_files(), "designer", PROCESS)
    return engine


@pytest.fixture
def app(pledge: Engine, web_app: Flask) -> Flask:
    return web_app


def cycles(engine: Engine) -> dict[str, int]:
    """This year's B1 cycles by member, with a phone number in every one's data."""
    ids = start_year(engine, "B1", YEAR, "sec1", POSTS, timing={"phone": PHONE})
    with engine.db.read() as s:
        rows = s.execute(select(Instance.id, Instance.data).where(Instance.id.in_(ids))).all()
    return {data["member"]: id_ for id_, data in rows}


def published(engine: Engine) -> int:
    """member1's cycle, returned once with comments, then approved and published."""
    inst = cycles(engine)["member1"]
    engine.complete(task_of(engine, "member1", "ut_commit", inst).id, "member1", {"pledges": PLEDGES[:2]})
    engine.complete(
        task_of(engine, "sec1", "ut_review", inst).id,
        "sec1",
        {"review_verdict": "return", "pledge_comments": RETURN_COMMENTS, "review_comment": "退回"},
    )
    engine.complete(
        task_of(engine, "member1", "ut_commit", inst).id,
        "member1",
        {"pledges": PLEDGES, "revision_note": REVISION_NOTE},
    )
    engine.complete(
        task_of(engine, "sec1", "ut_review", inst).id,
        "sec1",
        {"review_verdict": "approve", "pledge_comments": APPROVE_COMMENTS, "review_comment": REVIEW_COMMENT},
    )
    publish(engine, inst)
    return inst


def evaluated(engine: Engine, inst: int, decision: str) -> None:
    """Four quarters, then a 差 evaluation and the 摘牌审议 with ``decision``."""
    for number in range(1, 5):
        quarter(engine, inst, "member1", number)
    evaluate(engine, inst, "member1", BAD_YEAR, ["member2", "member4"])
    engine.complete(
        task_of(engine, "sec1", "ut_delist", inst).id,
        "sec1",
        {"delist_decision": decision, "delist_reason": DELIST_REASON},
    )


def pages(client: FlaskClient, inst: int) -> dict[str, str]:
    out = {}
    for url in ("/board", "/board/B1", f"/board/post/{inst}"):
        response = client.get(url)
        assert response.status_code == 200, url  # public: no redirect to /login
        out[url] = response.get_data(as_text=True)
    return out


def submit(
    client: FlaskClient, inst: int, body: str, author: str = "", address: str = "10.0.0.1"
) -> TestResponse:
    token = csrf(client, f"/board/post/{inst}")
    return client.post(
        f"/board/post/{inst}/feedback",
        data={"author": author, "body": body, "csrf_token": token},
        environ_base={"REMOTE_ADDR": address},
    )


def feedback_rows(engine: Engine) -> list[BoardFeedback]:
    with engine.db.read() as s:
        return list(s.execute(select(BoardFeedback).order_by(BoardFeedback.id)).scalars())


def events(engine: Engine, action: str) -> list[AuditEvent]:
    with engine.db.read() as s:
        return list(
            s.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            ).scalars()
        )


# --- what the public sees ------------------------------------------------------------------------


def test_a_published_post_shows_its_sign_and_nothing_private(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    evaluated(pledge, inst, "保留岗位限期整改")  # ratings, account and notes now in the data; post kept
    with pledge.db.read() as s:
        data = s.get(Instance, inst).data
    assert data["score"] == 67.0 and data["phone"] == PHONE and data["grade"] == "差"

    html = pages(app.test_client(), inst)

    post_page = html[f"/board/post/{inst}"]
    for pledge_item in PLEDGES:
        for field in ("category", "target", "measure", "deadline"):
            assert pledge_item[field] in post_page
    assert "变电运维责任岗" in post_page and "党员甲" in post_page and "第一党支部" in post_page
    assert post_page.count('data-state="reported"') == 4  # four on-time quarters
    assert "第一党支部" in html["/board"] and "变电运维责任岗" in html["/board/B1"]
    for url, text in html.items():
        leaked = [value for value in PRIVATE if value in text]
        assert leaked == [], f"{url} shows private values {leaked}"


def test_posts_appear_only_once_published_and_until_withdrawn(app: Flask, pledge: Engine) -> None:
    ids = cycles(pledge)
    client = app.test_client()
    pledge.complete(
        task_of(pledge, "member2", "ut_commit", ids["member2"]).id, "member2", {"pledges": PLEDGES}
    )
    commit_and_approve(pledge, ids["member4"], "member4")  # approved, sign not yet hung

    for inst in ids.values():  # written, approved or not even started: none is on the board
        assert client.get(f"/board/post/{inst}").status_code == 404
    assert "第一党支部" not in client.get("/board").get_data(as_text=True)
    assert client.get("/board/B1").status_code == 200  # the branch exists; it just has no posts yet

    publish(pledge, ids["member4"])
    assert client.get(f"/board/post/{ids['member4']}").status_code == 200
    assert "党员丁" in client.get("/board/B1").get_data(as_text=True)
    assert "第一党支部" in client.get("/board").get_data(as_text=True)
    assert "第一党支部" not in client.get(f"/board?year={YEAR - 1}").get_data(as_text=True)

    member1 = ids["member1"]
    commit_and_approve(pledge, member1)
    publish(pledge, member1)
    evaluated(pledge, member1, "摘牌")  # withdrawn: off the board
    assert client.get(f"/board/post/{member1}").status_code == 404
    assert "变电运维责任岗" not in client.get("/board/B1").get_data(as_text=True)
    assert "客户服务责任岗" in client.get("/board/B1").get_data(as_text=True)  # member4's stays


def test_unknown_pages_are_404_not_500(app: Flask, pledge: Engine) -> None:
    client = app.test_client()
    for url in (
        "/board/NOPE",
        "/board/post/999",
        f"/board/post/{2**70}",
        "/board?year=abc",
        "/board?year=99999",
    ):
        assert client.get(url).status_code == 404, url
    token = csrf(client, "/board")
    response = client.post("/board/post/999/feedback", data={"body": "很好的承诺", "csrf_token": token})
    assert response.status_code == 404 and feedback_rows(pledge) == []


def test_quarter_status_follows_reports_reminders_and_due_dates(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    client = app.test_client()

    def states() -> list[str]:
        with pledge.db.read() as s:
            return [q.state for q in model.post(s, inst, datetime.now(BEIJING)).quarters]

    assert states() == ["upcoming"] * 4
    assert pledge.run_due_jobs(later(91)) >= 1  # quarter 1 opens
    assert states() == ["open", "upcoming", "upcoming", "upcoming"]
    with pledge.db.read() as s:  # past the report's due date, before any reminder: late already
        assert model.post(s, inst, later(200)).quarters[0].state == "overdue"
    assert pledge.run_due_jobs(later(102)) >= 1  # a reminder went out
    assert states()[0] == "overdue"
    pledge.complete(task_of(pledge, "member1", "ut_report", inst).id, "member1", {"progress": PROGRESS})
    assert states() == ["reported_late", "upcoming", "upcoming", "upcoming"]
    html = client.get(f"/board/post/{inst}").get_data(as_text=True)
    assert 'data-quarter="1" data-state="reported_late"' in html and "逾期后已报告" in html


def test_quarter_rules_on_their_own() -> None:
    now = datetime.now(BEIJING)
    data = {
        "quarters": 4,
        "quarter": 3,
        "reports": [{"quarter": 1, "late": False}, {"quarter": 2, "late": True}],
    }
    assert [q.state for q in model.quarters(data, True, now + timedelta(days=1), now)] == [
        "reported",
        "reported_late",
        "open",
        "upcoming",
    ]
    assert model.quarters(data, True, now - timedelta(days=1), now)[2].state == "overdue"
    assert model.quarters({**data, "warnings": [3]}, False, None, now)[2].state == "overdue"
    assert len(model.quarters({"quarters": "x"}, False, None, now)) == 4


# --- feedback ------------------------------------------------------------------------------------


def test_feedback_is_stored_shown_and_audited_without_body_or_address(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    client = app.test_client()

    response = submit(
        client, inst, "  希望多组织青年职工一起学习 http://example.com/<b>x</b>  ", author="老张"
    )

    assert response.status_code == 303 and response.headers["Location"].endswith(
        f"/board/post/{inst}#feedback"
    )
    html = client.get(f"/board/post/{inst}").get_data(as_text=True)
    assert "希望多组织青年职工一起学习 http://example.com/&lt;b&gt;x&lt;/b&gt;" in html  # text, escaped
    assert "<b>x</b>" not in html and 'href="http://example.com' not in html
    assert "老张" in html and "感谢您的监督" in html
    (row,) = feedback_rows(pledge)
    assert row.body == "希望多组织青年职工一起学习 http://example.com/<b>x</b>" and row.author == "老张"
    assert row.address_hash == model.address_hash("test", "10.0.0.1") and "10.0.0.1" not in row.address_hash
    (event,) = events(pledge, "feedback_posted")
    assert (event.actor, event.instance_id, event.org_id) == ("public", inst, row.org_id)
    assert event.payload == {"feedback_id": row.id, "length": len(row.body)}
    assert_chain_intact(pledge)


@pytest.mark.parametrize(
    ("author", "body", "message"),
    [
        ("", "太短", "留言至少 5 个字"),
        ("", "   \n  ", "留言至少 5 个字"),
        ("", "长" * 501, "留言最多 500 个字"),
        ("", "带有响铃字符\x07的留言", "控制字符"),
        ("", "带有方向控制\u202e的留言", "控制字符"),
        ("名" * 21, "这是一条正常的留言", "称呼最多 20 个字"),
        ("老\x00张", "这是一条正常的留言", "控制字符"),
    ],
)
def test_bad_feedback_is_refused_with_the_input_kept(
    app: Flask, pledge: Engine, author: str, body: str, message: str
) -> None:
    inst = published(pledge)
    client = app.test_client()

    response = submit(client, inst, body, author=author)

    html = response.get_data(as_text=True)
    assert response.status_code == 422 and message in html
    kept = body.strip().replace("\x07", "").replace("\u202e", "")  # shown again without the bad characters
    name = author.replace("\x00", "")
    assert kept[:6] in html and f'name="author" value="{name}"' in html
    assert "\x07" not in html and "\x00" not in html and "\u202e" not in html
    assert feedback_rows(pledge) == [] and events(pledge, "feedback_posted") == []


def test_five_and_five_hundred_characters_are_accepted(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    client = app.test_client()
    assert submit(client, inst, "五个字留言", address="10.0.0.7").status_code == 303
    assert submit(client, inst, "多" * 500, author="名" * 20, address="10.0.0.8").status_code == 303
    assert [len(r.body) for r in feedback_rows(pledge)] == [5, 500]


def test_the_fourth_post_in_ten_minutes_from_one_address_is_429(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    client = app.test_client()
    for n in range(3):
        assert submit(client, inst, f"第{n + 1}条监督意见留言").status_code == 303

    response = submit(client, inst, "第四条监督意见留言", author="老李")

    html = response.get_data(as_text=True)
    assert response.status_code == 429 and "提交过于频繁" in html
    assert "第四条监督意见留言" in html and 'value="老李"' in html  # kept for later
    assert len(feedback_rows(pledge)) == 3
    assert submit(app.test_client(), inst, "另一个地址的留言", address="10.0.0.2").status_code == 303
    assert submit(client, inst, "IPv6 地址的留言", address="2001:db8::1").status_code == 303
    assert len(feedback_rows(pledge)) == 5


def test_daily_caps_per_address_and_per_post(pledge: Engine) -> None:
    inst = cycles(pledge)["member1"]
    commit_and_approve(pledge, inst)
    publish(pledge, inst)
    now = datetime.now(BEIJING)
    with pledge.db.write() as s:  # twenty across the day, never three in ten minutes
        for n in reversed(range(20)):  # oldest first, as they would arrive
            model.post_feedback(s, inst, None, f"第{n}条留言内容", "addr-a", now - timedelta(minutes=11 * n))
    with pytest.raises(model.RateLimited) as err, pledge.db.write() as s:
        model.post_feedback(s, inst, None, "第二十一条留言", "addr-a", now)
    assert err.value.details == {"scope": "address_day"}

    tight = model.Limits(per_post_day=21)
    with pledge.db.write() as s:
        model.post_feedback(s, inst, None, "另一地址的留言", "addr-b", now, tight)
    with pytest.raises(model.RateLimited) as err, pledge.db.write() as s:
        model.post_feedback(s, inst, None, "再一个地址的留言", "addr-c", now, tight)
    assert err.value.details == {"scope": "post_day"}
    assert len(feedback_rows(pledge)) == 21


def test_addresses_are_keyed_hashes_and_ipv6_counts_per_64() -> None:
    assert model.address_hash("k", "10.0.0.1") != model.address_hash("other key", "10.0.0.1")
    assert model.address_hash("k", "2001:db8::1") == model.address_hash("k", "2001:db8::ffff")
    assert model.address_hash("k", "2001:db8::1") != model.address_hash("k", "2001:db8:0:1::1")
    assert model.address_hash("k", "::ffff:10.0.0.1") == model.address_hash("k", "10.0.0.1")
    assert len(model.address_hash("k", None)) == 64


def test_feedback_without_csrf_token_is_400(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    client = app.test_client()
    client.get(f"/board/post/{inst}")

    response = client.post(f"/board/post/{inst}/feedback", data={"body": "没有令牌的留言"})

    assert response.status_code == 400 and feedback_rows(pledge) == []


# --- moderation ----------------------------------------------------------------------------------


def test_the_branch_secretary_hides_and_unhides_with_an_audited_reason(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    public = app.test_client()
    assert submit(public, inst, "这是一条辱骂性的留言内容").status_code == 303
    assert submit(public, inst, "这是一条正常的监督意见").status_code == 303
    abusive, fine = feedback_rows(pledge)
    sec1 = sign_in(app, "sec1")

    listing = sec1.get("/board/moderate").get_data(as_text=True)
    assert "这是一条辱骂性的留言内容" in listing and "这是一条正常的监督意见" in listing
    token = csrf(sec1, "/board/moderate")
    missing = sec1.post(f"/board/moderate/{abusive.id}/hide", data={"csrf_token": token, "reason": " "})
    assert missing.status_code == 422 and "请填写隐藏理由" in missing.get_data(as_text=True)

    hidden = sec1.post(f"/board/moderate/{abusive.id}/hide", data={"csrf_token": token, "reason": "人身攻击"})

    assert hidden.status_code == 303
    page = public.get(f"/board/post/{inst}").get_data(as_text=True)
    assert "这是一条辱骂性的留言内容" not in page and "这是一条正常的监督意见" in page
    assert "共 1 条留言" in page
    listing = sec1.get("/board/moderate").get_data(as_text=True)
    assert "这是一条辱骂性的留言内容" in listing and "人身攻击" in listing and 'data-hidden="true"' in listing
    (event,) = events(pledge, "feedback_hidden")
    assert (event.actor, event.instance_id, event.org_id) == ("sec1", inst, abusive.org_id)
    assert event.payload == {"feedback_id": abusive.id, "reason": "人身攻击"}

    shown = sec1.post(f"/board/moderate/{abusive.id}/unhide", data={"csrf_token": token, "reason": "误操作"})
    assert shown.status_code == 303
    assert "这是一条辱骂性的留言内容" in public.get(f"/board/post/{inst}").get_data(as_text=True)
    (event,) = events(pledge, "feedback_unhidden")
    assert event.actor == "sec1" and event.payload == {"feedback_id": abusive.id, "reason": "误操作"}
    assert fine.hidden is False
    assert_chain_intact(pledge)


def test_only_the_posts_branch_and_the_office_above_may_moderate(app: Flask, pledge: Engine) -> None:
    inst = published(pledge)
    assert submit(app.test_client(), inst, "需要审核的一条留言").status_code == 303
    (entry,) = feedback_rows(pledge)

    sec2 = sign_in(app, "sec2")  # another branch's secretary: sees nothing, may do nothing
    assert "需要审核的一条留言" not in sec2.get("/board/moderate").get_data(as_text=True)
    token = csrf(sec2, "/board/moderate")
    assert (
        sec2.post(f"/board/moderate/{entry.id}/hide", data={"csrf_token": token, "reason": "x"}).status_code
        == 404
    )
    member = sign_in(app, "member1")
    assert member.get("/board/moderate").status_code == 403
    token = csrf(member, "/board")
    assert (
        member.post(f"/board/moderate/{entry.id}/hide", data={"csrf_token": token, "reason": "x"}).status_code
        == 404
    )
    anonymous = app.test_client()
    assert anonymous.get("/board/moderate").status_code == 302  # to the sign-in page
    assert feedback_rows(pledge)[0].hidden is False and events(pledge, "feedback_hidden") == []

    office = sign_in(app, "office")  # the party office above B1
    assert "需要审核的一条留言" in office.get("/board/moderate").get_data(as_text=True)
    token = csrf(office, "/board/moderate")
    assert (
        office.post(
            f"/board/moderate/{entry.id}/hide", data={"csrf_token": token, "reason": "广告"}
        ).status_code
        == 303
    )
    assert feedback_rows(pledge)[0].hidden is True


def test_signed_in_people_see_the_board_and_secretaries_a_moderation_link(app: Flask, pledge: Engine) -> None:
    published(pledge)
    html = sign_in(app, "sec1").get("/board").get_data(as_text=True)
    assert "/board/moderate" in html and "第一党支部" in html
    assert "/board/moderate" not in sign_in(app, "member2").get("/board").get_data(as_text=True)


def test_demo_publishes_posts_with_feedback_once(db) -> None:  # type: ignore[no-untyped-def]
    from web import demo, demo_pledge

    engine = Engine(db, script_time_budget=1.0)
    with engine.db.write() as s:
        demo._load_directory(s, demo.DemoReport())
    engine.deploy(pledge_files(), demo.DESIGNER, PROCESS)

    assert len(demo_pledge.load(engine, {})) == 12
    assert demo_pledge.load(engine, {}) == []  # a second run adds no cycles and no feedback

    rows = feedback_rows(engine)
    assert len(rows) == 5 and [r.hidden_reason for r in rows if r.hidden] == ["广告"]
    assert len(events(engine, "feedback_posted")) == 5 and len(events(engine, "feedback_hidden")) == 1
    now = datetime.now(BEIJING)
    with engine.db.read() as s:
        year = engine.clock().year
        names = {b.code: b.posts for b in model.branches(s, year)}
        assert names == {"DEMO-JG": 1, "DEMO-YX": 2}
        (yangfan,) = model.branch_posts(s, org_by_code(s, "DEMO-JG").id, year, now)
        shown, total = model.visible_feedback(s, yangfan.id)
    assert yangfan.post == "党建宣传责任岗" and total == 2
    assert [f.author for f in shown] == [None, "王师傅"]  # newest first, the advert hidden
    assert_chain_intact(engine)
