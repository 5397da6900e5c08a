"""A small party organisation for tests: a committee, two branches, a group, people in every role."""

from __future__ import annotations

from engine import Database
from engine.directory import add_org, add_user, grant, join_group

ORGS = [
    ("HQ", "公司党委", None, "committee"),
    ("B1", "第一党支部", "HQ", "branch"),
    ("B2", "第二党支部", "HQ", "branch"),
    ("B1G1", "第一党小组", "B1", "group"),
]

PEOPLE = [
    ("designer", "流程设计员", [("HQ", "designer")]),
    ("secretary", "党委书记", [("HQ", "party_committee")]),
    ("office", "党建工作部", [("HQ", "party_office")]),
    ("judge1", "评委一", [("HQ", "review_committee")]),
    ("judge2", "评委二", [("HQ", "review_committee")]),
    ("judge3", "评委三", [("HQ", "review_committee")]),
    ("sec1", "一支部书记", [("B1", "branch_secretary")]),
    ("sec2", "二支部书记", [("B2", "branch_secretary")]),
    ("member1", "党员甲", [("B1", "party_member")]),
    ("member2", "党员乙", [("B1", "party_member")]),
    ("member3", "党员丙", [("B2", "party_member")]),
    ("auditor", "审计员", [("HQ", "auditor")]),
    ("outsider", "局外人", []),
]


def seed_directory(db: Database) -> None:
    with db.write() as s:
        for code, name, parent, kind in ORGS:
            add_org(s, code, name, parent, kind)
        for username, display, roles in PEOPLE:
            add_user(s, username, display)
            for org, role in roles:
                grant(s, username, org, role)
        join_group(s, "member1", "finance")
