"""Demo data: a company party organisation with people in every role, and the shipped workflows.

Why it exists: a new user runs ``make run`` and sees a populated product without typing anything.
Loading is idempotent — organisations are matched by code, people by username, roles by
(person, organisation, role) and definitions by content hash — so ``qizhi demo`` and every
``QIZHI_DEMO=1`` start can run it again and add nothing twice. Every demo account gets the one
published demo password, which is why the demo is for trying the product, never for real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import BundleInvalid, Engine, EngineError, queries
from engine.bundle import Bundle
from engine.directory import ROLES, add_org, add_user, grant
from engine.models import Definition, Instance, Membership, Organisation, User
from web.passwords import hash_password
from web.workflows import FORMS, WORKFLOWS, WorkflowBundle, discover

COMMITTEE = "DEMO"
DESIGNER = "luoyi"
DEMO_PASSWORD = "qizhi-demo"

# (code, name, parent code, kind); parents come before their children.
ORGS: list[tuple[str, str, str | None, str]] = [
    (COMMITTEE, "国网示范公司党委", None, "committee"),
    ("DEMO-YJ", "运维检修党总支", COMMITTEE, "general_branch"),
    ("DEMO-JG", "机关党支部", COMMITTEE, "branch"),
    ("DEMO-YX", "营销服务党支部", COMMITTEE, "branch"),
    ("DEMO-BD", "变电运维党支部", "DEMO-YJ", "branch"),
    ("DEMO-SD", "输电运检党支部", "DEMO-YJ", "branch"),
    ("DEMO-BD-1", "变电运维第一党小组", "DEMO-BD", "group"),
]


Person = tuple[str, str]  # (username, display name)
Account = tuple[str, str, list[tuple[str, str]]]  # (username, display name, [(org code, role)])


def _branch(org: str, secretary: Person, members: list[Person], masses: list[Person]) -> list[Account]:
    rows: list[Account] = [(secretary[0], secretary[1], [(org, "branch_secretary")])]
    rows += [(u, n, [(org, "party_member")]) for u, n in members]
    rows += [(u, n, [(org, "masses")]) for u, n in masses]
    return rows


ACCOUNTS: list[Account] = [
    ("wangjianguo", "王建国", [(COMMITTEE, "party_committee")]),
    ("lihaiyan", "李海燕", [(COMMITTEE, "party_committee")]),
    ("zhangwei", "张伟", [(COMMITTEE, "party_committee")]),
    ("chenjing", "陈静", [(COMMITTEE, "party_office")]),
    ("sunli", "孙丽", [(COMMITTEE, "party_office")]),
    ("zhoumin", "周敏", [(COMMITTEE, "review_committee")]),
    ("wuqiang", "吴强", [(COMMITTEE, "review_committee")]),
    ("zhengyu", "郑宇", [(COMMITTEE, "review_committee")]),
    ("fengxue", "冯雪", [(COMMITTEE, "review_committee")]),
    ("hanlei", "韩磊", [(COMMITTEE, "review_committee")]),
    ("xuhui", "许辉", [(COMMITTEE, "auditor")]),
    ("heyun", "何云", [(COMMITTEE, "auditor")]),
    (DESIGNER, "罗毅", [(COMMITTEE, "designer")]),
    ("admin", "系统管理员", [(COMMITTEE, "admin")]),
    ("gaofeng", "高峰", [("DEMO-YJ", "branch_secretary")]),
    *_branch(
        "DEMO-JG",
        ("liuyang", "刘洋"),
        [("yangfan", "杨帆"), ("huangli", "黄丽"), ("zhaolei", "赵磊"), ("qianjin", "钱进")],
        [("songjia", "宋佳")],
    ),
    *_branch(
        "DEMO-YX",
        ("majun", "马骏"),
        [("zhuting", "朱婷"), ("hujie", "胡杰"), ("guoqing", "郭庆"), ("linna", "林娜")],
        [("tangming", "唐明"), ("caixia", "蔡霞")],
    ),
    *_branch(
        "DEMO-BD",
        ("dengchao", "邓超"),
        [("xiaoyu", "肖宇"), ("chengpeng", "程鹏"), ("yuanfang", "袁芳"), ("panlong", "潘龙")],
        [("duanwei", "段伟")],
    ),
    *_branch(
        "DEMO-SD",
        ("jiangtao", "江涛"),
        [("weidong", "魏东"), ("xiebin", "谢斌"), ("luoxin", "罗欣"), ("tianye", "田野")],
        [("fangyuan", "方圆")],
    ),
]

# Members of the 党小组 are also members of their branch.
GROUP_MEMBERS = [("xiaoyu", "DEMO-BD-1"), ("chengpeng", "DEMO-BD-1"), ("yuanfang", "DEMO-BD-1")]


def usernames() -> list[str]:
    return [username for username, _, _ in ACCOUNTS]


@dataclass
class SignInHelp:
    """What the sign-in page shows in demo mode: the password and, per role, who to sign in as, with
    how many open tasks each has, so a new user starts with someone who has work waiting."""

    password: str
    roles: list[tuple[str, list[tuple[str, str, int]]]]


def sign_in_help(s: Session, per_role: int = 3) -> SignInHelp:
    """Up to ``per_role`` accounts per role, those with the most open tasks first."""
    ids = dict(s.execute(select(User.username, User.id).where(User.username.in_(usernames()))).all())
    waiting = {name: queries.inbox_count(s, ids[name]) if name in ids else 0 for name in usernames()}
    by_role: dict[str, list[tuple[str, str, int]]] = {role: [] for role in ROLES}
    for username, display, roles in ACCOUNTS:
        for _org, role in roles:
            by_role[role].append((username, display, waiting[username]))
    busiest = {role: sorted(people, key=lambda p: -p[2])[:per_role] for role, people in by_role.items()}
    return SignInHelp(DEMO_PASSWORD, [(ROLES[role], people) for role, people in busiest.items() if people])


@dataclass
class DemoReport:
    """What a load did, so the CLI can say it and a second run can be seen to add nothing."""

    orgs_added: int = 0
    users_added: int = 0
    roles_added: int = 0
    instances_started: int = 0
    deployed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"demo directory: {self.orgs_added} organisations, {self.users_added} people, "
            f"{self.roles_added} roles added; {self.instances_started} demo instances started"
        ]
        out += [f"deployed {d}" for d in self.deployed]
        out += [f"unchanged {d}" for d in self.unchanged]
        return out


def load_demo(engine: Engine, workflows: Path = WORKFLOWS, forms: Path = FORMS) -> DemoReport:
    """Add what is missing of the demo directory, then deploy every bundle of ``workflows/``.

    A refused bundle does not stop the others: its problems are collected in the report.
    """
    report = DemoReport()
    with engine.db.write() as s:
        _load_directory(s, report)
    for bundle in discover(workflows, forms):
        known = _deployed(engine, bundle)
        try:
            definition = engine.deploy(bundle.files, DESIGNER, bundle.process_key)
        except BundleInvalid as err:
            report.problems.extend(str(p) for p in err.problems)
            continue
        label = f"{definition.process_key} version {definition.version}"
        (report.unchanged if known else report.deployed).append(label)
    _start_demo_instances(engine, report)
    return report


def _start_demo_instances(engine: Engine, report: DemoReport) -> None:
    """Projects and pledge cycles at different stages, so the inbox and lists have real work in them."""
    from web import demo_grading, demo_lifecycle, demo_pledge

    before = _instance_count(engine)
    for loader in (demo_lifecycle.load, demo_pledge.load, demo_grading.load):
        try:
            loader(engine, {})
        except EngineError as err:  # a process not deployed yet, say: report it, keep the rest
            report.problems.append(f"{loader.__module__}: {err.message}")
    report.instances_started = _instance_count(engine) - before


def _instance_count(engine: Engine) -> int:
    with engine.db.read() as s:
        return s.execute(select(func.count()).select_from(Instance)).scalar_one()


def _deployed(engine: Engine, bundle: WorkflowBundle) -> bool:
    query = select(Definition.id).where(
        Definition.content_hash == Bundle.from_files(bundle.files).content_hash
    )
    if bundle.process_key:
        query = query.where(Definition.process_key == bundle.process_key)
    with engine.db.read() as s:
        return s.execute(query.limit(1)).first() is not None


def _load_directory(s: Session, report: DemoReport) -> None:
    for code, name, parent, kind in ORGS:
        if s.execute(select(Organisation.id).where(Organisation.code == code)).first() is None:
            add_org(s, code, name, parent, kind)
            report.orgs_added += 1
    grants = [(u, org, role) for u, _, roles in ACCOUNTS for org, role in roles]
    grants += [(u, org, "party_member") for u, org in GROUP_MEMBERS]
    password = hash_password(DEMO_PASSWORD)  # one hash for all: forty scrypt runs would slow every start
    for username, display, _ in ACCOUNTS:
        if s.execute(select(User.id).where(User.username == username)).first() is None:
            add_user(s, username, display).password_hash = password
            report.users_added += 1
    for username, org, role in grants:
        held = s.execute(
            select(Membership.id)
            .join(User, User.id == Membership.user_id)
            .join(Organisation, Organisation.id == Membership.org_id)
            .where(User.username == username, Organisation.code == org, Membership.role == role)
        ).first()
        if held is None:
            grant(s, username, org, role)
            report.roles_added += 1
