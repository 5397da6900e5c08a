"""The inbox page: what each person sees, tabs, filters, sorts, paging, claim, release and bulk claim.

Also the inbox queries behind it (engine.queries.inbox with the sorts and sources the page offers).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import update

from engine import Engine
from engine.directory import add_user, grant, user_by_name
from engine.models import HumanTask, User
from engine.queries import SORTS, InboxFilter, inbox, inbox_count, inbox_facets
from tests.helpers import files, only_task
from tests.web import csrf, post, sign_in
from web.passwords import hash_password

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
SCORING = ("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json")


def task_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-task="(\d+)"', html)]


def approvals(engine: Engine, count: int, org: str = "B1", actor: str = "sec1") -> list[int]:
    engine.deploy(files(*APPROVAL), "designer")
    return [engine.start("approval", actor, org, {"title": f"申报{i}"}).id for i in range(count)]


def set_due(engine: Engine, task_id: int, due: datetime | None, priority: int | None = None) -> None:
    values: dict[str, object] = {"due_at": due}
    if priority is not None:
        values["priority"] = priority
    with engine.db.write() as s:
        s.execute(update(HumanTask).where(HumanTask.id == task_id).values(**values))


def second_secretary(engine: Engine) -> None:
    with engine.db.write() as s:
        add_user(s, "sec1b", "一支部副书记")
        grant(s, "sec1b", "B1", "branch_secretary")
        s.execute(
            update(User).where(User.username == "sec1b").values(password_hash=hash_password("pw-sec1b"))
        )


# --- the page --------------------------------------------------------------------------------------


def test_each_person_sees_only_what_they_may_act_on(engine: Engine, web_app: Flask) -> None:
    approvals(engine, 2)
    engine.deploy(files(*SCORING), "designer")
    engine.start("scoring", "office", "HQ", {"judges": ["judge1"]})

    html = sign_in(web_app, "sec1").get("/inbox/").get_data(as_text=True)
    assert len(task_ids(html)) == 2
    assert (
        "填写申报书" in html
        and "项目申报审批" in html
        and "第一党支部" in html
        and 'class="overdue"' not in html
    )
    assert 'data-count="inbox.index">2<' in html  # the navigation's count

    other = sign_in(web_app, "sec2").get("/inbox/").get_data(as_text=True)
    assert task_ids(other) == [] and "您目前没有待办任务" in other

    office = sign_in(web_app, "office").get("/inbox/").get_data(as_text=True)
    assert len(task_ids(office)) == 1 and "第一党支部" not in office


def test_claim_release_and_bulk_claim_as_plain_form_posts(engine: Engine, web_app: Flask) -> None:
    approvals(engine, 3)
    second_secretary(engine)
    sec1, deputy = sign_in(web_app, "sec1"), sign_in(web_app, "sec1b", "pw-sec1b")
    first, *rest = task_ids(sec1.get("/inbox/").get_data(as_text=True))

    claimed = post(sec1, f"/inbox/tasks/{first}/claim", {"next": "/inbox/?view=pool&sort=newest"})
    assert claimed.status_code == 302 and claimed.headers["Location"] == "/inbox/?view=pool&sort=newest"
    assert task_ids(sec1.get("/inbox/?view=claimed").get_data(as_text=True)) == [first]
    assert first not in task_ids(deputy.get("/inbox/").get_data(as_text=True))  # gone from the others' pool
    assert sorted(task_ids(sec1.get("/inbox/?view=pool").get_data(as_text=True))) == sorted(rest)

    late = post(deputy, f"/inbox/tasks/{first}/claim", {"next": "/inbox/"})
    assert late.status_code == 302
    assert "此任务刚被他人认领或已办结" in deputy.get("/inbox/").get_data(as_text=True)

    released = post(sec1, f"/inbox/tasks/{first}/unclaim", {"next": "https://evil.example/"})
    assert released.status_code == 302 and released.headers["Location"] == "/inbox/"  # never off-site
    assert task_ids(sec1.get("/inbox/?view=claimed").get_data(as_text=True)) == []

    bulk = sec1.post(
        "/inbox/claim",
        data={
            "task": [str(first), str(rest[0]), "999999", "x"],
            "next": "/inbox/",
            "csrf_token": csrf(sec1, "/inbox/"),
        },
    )
    assert bulk.status_code == 302
    page = sec1.get("/inbox/?view=claimed").get_data(as_text=True)
    assert sorted(task_ids(page)) == sorted([first, rest[0]])
    flashes = sec1.get("/inbox/").get_data(as_text=True)  # flashes were consumed by the page above
    assert (
        "已认领 2 项任务" in page
        and "1 项未能认领" in page
        and "已认领" not in flashes.split("<main>")[1][:200]
    )
    assert task_ids(deputy.get("/inbox/").get_data(as_text=True)) == [rest[1]]


def test_htmx_claim_and_release_redraw_only_the_row(engine: Engine, web_app: Flask) -> None:
    [inst] = approvals(engine, 1)
    task = only_task(engine, "sec1", "apply")
    second_secretary(engine)
    sec1 = sign_in(web_app, "sec1")
    htmx = {"HX-Request": "true"}

    row = post(sec1, f"/inbox/tasks/{task.id}/claim", {"next": "/inbox/"}, headers=htmx)
    html = row.get_data(as_text=True)
    assert row.status_code == 200 and html.lstrip().startswith(
        f'<tr data-task="{task.id}" data-holding="claimed"'
    )
    assert "放弃认领" in html and "<html" not in html

    deputy = sign_in(web_app, "sec1b", "pw-sec1b")
    refused = post(deputy, f"/inbox/tasks/{task.id}/claim", {}, headers=htmx).get_data(as_text=True)
    assert 'data-holding="other"' in refused and "此任务刚被他人认领或已办结" in refused

    back = post(sec1, f"/inbox/tasks/{task.id}/unclaim", {}, headers=htmx).get_data(as_text=True)
    assert 'data-holding="candidate"' in back and f'hx-post="/inbox/tasks/{task.id}/claim"' in back
    assert engine.instance(inst).open_tasks[0].assignee_id is None


def test_filters_by_process_stage_organisation_and_due(engine: Engine, web_app: Flask) -> None:
    with engine.db.write() as s:
        grant(s, "office", "B1", "branch_secretary")  # the office also acts for B1 here
    b1 = approvals(engine, 2, "B1", "sec1")
    engine.deploy(files(*SCORING), "designer")
    engine.start("scoring", "office", "HQ", {"judges": ["judge1"]})
    applies = [t for t in engine.inbox("office") if t.task_spec == "apply"]
    set_due(engine, applies[0].id, datetime.now(UTC) - timedelta(days=1))
    office = sign_in(web_app, "office")
    everything = task_ids(office.get("/inbox/").get_data(as_text=True))
    assert len(everything) == 3 and len(b1) == 2

    by_process = office.get("/inbox/?process=scoring").get_data(as_text=True)
    assert len(task_ids(by_process)) == 1 and "项目申报审批" in by_process  # still offered as a choice
    hq = [t for t in engine.inbox("office") if t.task_spec != "apply"][0]
    assert task_ids(office.get(f"/inbox/?org={hq.org_id}").get_data(as_text=True)) == [hq.id]
    overdue = office.get("/inbox/?due=overdue").get_data(as_text=True)
    assert task_ids(overdue) == [applies[0].id] and "已逾期" in overdue and "is-overdue" in overdue
    assert len(task_ids(office.get("/inbox/?due=week").get_data(as_text=True))) == 2
    none = office.get("/inbox/?process=approval&stage=不存在的阶段").get_data(as_text=True)
    assert task_ids(none) == [] and "没有符合筛选条件的任务" in none

    odd = office.get("/inbox/?sort=evil&org=abc&after=-1&view=zzz&due=1' or 1=1")
    assert odd.status_code == 200 and len(task_ids(odd.get_data(as_text=True))) == 3


def test_sorts_and_pages_follow_the_chosen_order(engine: Engine, web_app: Flask) -> None:
    ids = approvals(engine, 30)
    tasks = engine.inbox("sec1", InboxFilter(limit=100))
    now = datetime.now(UTC)
    for n, task in enumerate(tasks):  # due dates in reverse order of arrival, some undated, some urgent
        set_due(engine, task.id, None if n % 7 == 0 else now + timedelta(days=40 - n), priority=n % 3)
    client = sign_in(web_app, "sec1")

    for sort in ("due", "priority", "newest", "id"):
        expected = [t.id for t in engine.inbox("sec1", InboxFilter(sort=sort, limit=100))]
        first = client.get(f"/inbox/?sort={sort}").get_data(as_text=True)
        nxt = re.search(r'href="([^"]+)" rel="next"', first)
        assert nxt, sort
        second = client.get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)
        assert task_ids(first) + task_ids(second) == expected, sort
        assert len(task_ids(first)) == 25 and 'rel="next"' not in second and "回到第一页" in second
    assert len(ids) == 30
    due_order = [t for t in engine.inbox("sec1", InboxFilter(sort="due", limit=100))]
    assert due_order[-1].due_at is None and due_order[0].due_at is not None


# --- the queries -------------------------------------------------------------------------------------


def test_sources_mine_claimed_and_unclaimed(engine: Engine) -> None:
    approvals(engine, 3)
    first, second, third = engine.inbox("sec1")
    engine.claim(first.id, "sec1")
    me = _id(engine, "sec1")
    with engine.db.write() as s:  # a task the process gave sec1 outright
        given = update(HumanTask).where(HumanTask.id == second.id).values(assignee_id=me, assignment="owner")
        s.execute(given)
    with engine.db.read() as s:
        assert [t.id for t in inbox(s, me, InboxFilter(claimed_only=True))] == [first.id]
        assert [t.id for t in inbox(s, me, InboxFilter(mine_only=True))] == [first.id, second.id]
        assert [t.id for t in inbox(s, me, InboxFilter(unclaimed_only=True))] == [third.id]
        assert inbox_count(s, me) == 3 and inbox_count(s, me, f=InboxFilter(unclaimed_only=True)) == 1
        assert inbox_count(s, me, cap=2) == 2
        assert inbox_facets(s, me) == [("approval", None, first.org_id)]


def _id(engine: Engine, username: str) -> int:
    with engine.db.read() as s:
        return user_by_name(s, username).id


def test_keyset_pages_match_the_whole_list_for_every_sort(engine: Engine) -> None:
    approvals(engine, 12)
    tasks = engine.inbox("sec1")
    now = datetime.now(UTC)
    for n, task in enumerate(tasks):  # ties on purpose: equal due dates and priorities
        set_due(engine, task.id, None if n % 4 == 0 else now + timedelta(days=n % 3), priority=n % 2)
    for sort in SORTS:
        whole = [t.id for t in engine.inbox("sec1", InboxFilter(sort=sort))]
        paged: list[int] = []
        after = None
        while True:
            page = engine.inbox("sec1", InboxFilter(sort=sort, limit=5, after_id=after))
            if not page:
                break
            paged += [t.id for t in page]
            after = page[-1].id
        assert paged == whole and len(whole) == 12, sort
    by_priority = engine.inbox("sec1", InboxFilter(sort="priority"))
    assert [t.priority for t in by_priority] == sorted((t.priority for t in by_priority), reverse=True)
