"""The web shell's skeleton: the factory, the home page, /healthz, headers, settings and the demo loader.

Runs on whichever backend the ``db`` fixture gives (SQLite, or PostgreSQL via QIZHI_TEST_DATABASE_URL).
"""

from __future__ import annotations

import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from engine import Database
from engine.directory import ROLES
from engine.models import AuditEvent, Definition, GroupMember, Membership, Organisation, User
from tests.conftest import FIXTURES
from tests.web import csrf, make_app, sign_in
from web import create_app, engine_of
from web.demo import ACCOUNTS, COMMITTEE, DEMO_PASSWORD, DESIGNER, load_demo
from web.security import HEADERS
from web.settings import ConfigError
from web.workflows import discover

QIZHI_VARS = ("QIZHI_DATABASE_URL", "QIZHI_SECRET_KEY", "QIZHI_DEMO")


@pytest.fixture
def app(db: Database, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {"QIZHI_DATABASE_URL": db.url, "QIZHI_SECRET_KEY": "test", "QIZHI_DEMO": "1", "TESTING": True},
        instance_path=str(tmp_path / "instance"),
    )
    yield app
    engine_of(app).db.dispose()


def sample_folders(tmp_path: Path) -> tuple[Path, Path]:
    """A workflows/ and forms/ pair made from the test fixtures (the product never reads tests/)."""
    workflows, forms = tmp_path / "workflows", tmp_path / "forms"
    workflows.mkdir()
    forms.mkdir()
    for name in ("approval.bpmn", "scoring.bpmn", "notify.bpmn", "grade.dmn"):
        shutil.copy(FIXTURES / name, workflows / name)
    for name in ("apply.json", "review.json", "score.json"):
        shutil.copy(FIXTURES / name, forms / name)
    return workflows, forms


def counts(db: Database) -> dict[str, int]:
    with db.read() as s:
        return {
            m.__name__: s.execute(select(func.count()).select_from(m)).scalar_one()
            for m in (Organisation, User, Membership, GroupMember, Definition, AuditEvent)
        }


def test_home_page_shows_definitions_instances_tasks_and_audit(app: Flask, tmp_path: Path) -> None:
    engine = engine_of(app)
    load_demo(engine, *sample_folders(tmp_path))
    engine.start("approval", "liuyang", "DEMO-JG", {"title": "红旗党建品牌"})

    page = sign_in(app, "chenjing", DEMO_PASSWORD).get("/")
    secretary = sign_in(app, "liuyang", DEMO_PASSWORD).get("/").get_data(as_text=True)

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "刘洋" in secretary and "已部署的流程定义" not in secretary and "审计链" not in secretary
    assert '<html lang="zh-CN">' in html and "<title>首页 · 旗帜" in html
    assert "项目申报审批" in html and "approval" in html and DESIGNER in html
    assert "运行中" in html and "待办任务" in html
    assert "审计链完整" in html


def test_demo_sign_in_page_lists_accounts_by_role_only_in_demo_mode(
    app: Flask, db: Database, tmp_path: Path
) -> None:
    load_demo(engine_of(app), *sample_folders(tmp_path))

    demo_page = app.test_client().get("/login").get_data(as_text=True)
    plain = make_app(db, tmp_path / "plain").test_client().get("/login").get_data(as_text=True)

    assert "王建国" in demo_page and "wangjianguo" in demo_page and "支部书记" in demo_page
    assert DEMO_PASSWORD in demo_page
    assert "wangjianguo" not in plain and DEMO_PASSWORD not in plain and "演示账号" not in plain


def test_every_response_carries_the_security_headers(app: Flask) -> None:
    engine_of(app).db.upgrade()
    client = app.test_client()
    for path in ("/login", "/healthz", "/static/qizhi.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        for name, value in HEADERS.items():
            assert response.headers[name] == value, (path, name)
    assert HEADERS["Content-Security-Policy"] == "default-src 'self'"


def test_healthz_names_the_backend(app: Flask, db: Database) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": db.engine.dialect.name}
    assert db.engine.dialect.name in ("sqlite", "postgresql")


def test_page_text_from_a_bpmn_is_escaped(app: Flask, tmp_path: Path) -> None:
    engine = engine_of(app)
    load_demo(engine, tmp_path / "none", tmp_path / "none")
    source = (FIXTURES / "approval.bpmn").read_text(encoding="utf-8")
    hostile = source.replace(
        'name="项目申报审批" isExecutable', 'name="&lt;script&gt;x()&lt;/script&gt;" isExecutable'
    )
    forms = {n: (FIXTURES / n).read_bytes() for n in ("apply.json", "review.json")}
    engine.deploy({"approval.bpmn": hostile, **forms}, DESIGNER)

    html = sign_in(app, DESIGNER, DEMO_PASSWORD).get("/").get_data(as_text=True)

    assert "<script>" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html


def test_a_tampered_audit_trail_shows_as_broken(app: Flask, tmp_path: Path) -> None:
    engine = engine_of(app)
    load_demo(engine, *sample_folders(tmp_path))
    client = sign_in(app, "xuhui", DEMO_PASSWORD)
    with engine.db.write() as s:
        s.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 1"))

    html = client.get("/").get_data(as_text=True)

    assert "审计链已损坏" in html and "第 1 条" in html


def test_demo_loader_is_idempotent(app: Flask, db: Database) -> None:
    engine = engine_of(app)
    engine.db.upgrade()

    first = load_demo(engine)  # the repository's own workflows/ and forms/
    after_first = counts(db)
    second = load_demo(engine)

    assert first.problems == [] and second.problems == []
    assert counts(db) == after_first
    assert (second.orgs_added, second.users_added, second.roles_added, second.deployed) == (0, 0, 0, [])
    assert after_first["User"] == len(ACCOUNTS) and 35 <= len(ACCOUNTS) <= 45


def test_demo_deploys_each_root_process_with_what_it_calls_once(app: Flask, tmp_path: Path) -> None:
    engine = engine_of(app)
    folders = sample_folders(tmp_path)

    first = load_demo(engine, *folders)
    second = load_demo(engine, *folders)

    assert sorted(first.deployed) == ["approval version 1", "scoring version 1"]
    assert second.deployed == [] and sorted(second.unchanged) == sorted(first.deployed)
    scoring = next(b for b in discover(*folders) if b.process_key == "scoring")
    assert set(scoring.files) == {"scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json"}
    approval = next(b for b in discover(*folders) if b.process_key == "approval")
    assert set(approval.files) == {"approval.bpmn", "apply.json", "review.json"}  # only what it references


def test_demo_puts_every_role_in_the_right_kind_of_organisation(app: Flask) -> None:
    engine = engine_of(app)
    load_demo(engine, Path("/nonexistent"), Path("/nonexistent"))
    committee_roles = {"party_committee", "party_office", "review_committee", "auditor", "designer", "admin"}
    with engine.db.read() as s:
        rows = s.execute(
            select(Membership.role, Organisation.code, Organisation.kind).join(
                Organisation, Organisation.id == Membership.org_id
            )
        ).all()
    assert {role for role, _, _ in rows} == set(ROLES)
    for role, code, kind in rows:
        if role in committee_roles:
            assert code == COMMITTEE, (role, code)
        elif role in ("party_member", "masses"):
            assert kind in ("branch", "group"), (role, code)
    assert {kind for _, _, kind in rows} >= {"committee", "general_branch", "branch", "group"}


def test_settings_default_to_the_instance_folder_and_keep_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in QIZHI_VARS:
        monkeypatch.delenv(name, raising=False)
    instance = tmp_path / "instance"

    first = create_app(instance_path=str(instance))
    second = create_app(instance_path=str(instance))

    assert first.config["QIZHI_DATABASE_URL"] == f"sqlite:///{instance / 'qizhi.db'}"
    assert first.config["QIZHI_DEMO"] is False
    key_file = instance / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] == key_file.read_text().strip()
    assert len(first.config["SECRET_KEY"]) >= 64


def test_settings_come_from_the_environment_and_explicit_config_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QIZHI_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("QIZHI_SECRET_KEY", "from-env")
    monkeypatch.setenv("QIZHI_DEMO", "1")

    from_env = create_app(instance_path=str(tmp_path / "i"))
    explicit = create_app(
        {"QIZHI_SECRET_KEY": "given", "QIZHI_DEMO": False}, instance_path=str(tmp_path / "i")
    )

    assert from_env.config["QIZHI_DATABASE_URL"].endswith("env.db")
    assert (from_env.config["SECRET_KEY"], from_env.config["QIZHI_DEMO"]) == ("from-env", True)
    assert (explicit.config["SECRET_KEY"], explicit.config["QIZHI_DEMO"]) == ("given", False)
    assert not (tmp_path / "i" / "secret_key").exists()
    monkeypatch.setenv("QIZHI_DEMO", "maybe")
    with pytest.raises(ConfigError, match="QIZHI_DEMO"):
        create_app(instance_path=str(tmp_path / "i"))


@pytest.mark.parametrize(("hops", "seen"), [("0", "127.0.0.1"), ("1", "203.0.113.9")])
def test_forwarded_client_address_is_trusted_only_behind_a_configured_proxy(
    db: Database, tmp_path: Path, hops: str, seen: str
) -> None:
    app = create_app(
        {"QIZHI_DATABASE_URL": db.url, "QIZHI_SECRET_KEY": "test", "QIZHI_PROXIES": hops, "TESTING": True},
        instance_path=str(tmp_path / "instance"),
    )
    client = app.test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    form = {"username": "nobody", "password": "wrong", "csrf_token": csrf(client)}
    assert client.post("/login", data=form, headers=forwarded).status_code == 401
    with db.read() as s:
        failed = s.execute(select(AuditEvent).where(AuditEvent.action == "sign_in_failed")).scalar_one()
    assert failed.payload["address"] == seen
    engine_of(app).db.dispose()


@pytest.mark.parametrize("value", ["-1", "two", "9"])
def test_a_bad_proxy_count_stops_start_up_naming_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="QIZHI_PROXIES"):
        create_app({"QIZHI_PROXIES": value}, instance_path=str(tmp_path / "i"))


def test_demo_sign_in_page_puts_accounts_with_work_first_and_says_how_much(app: Flask) -> None:
    engine = engine_of(app)
    load_demo(engine)  # the real workflows: demo instances leave tasks waiting for some people
    html = app.test_client().get("/login").get_data(as_text=True)

    waiting = dict(re.findall(r'data-waiting="([a-z]+)">(\d+) 项待办', html))
    assert waiting, "no demo account is shown with open tasks"
    for username, shown in waiting.items():
        assert int(shown) == len(engine.inbox(username)), username
    secretaries = re.search(r"<dt>支部书记</dt>\s*<dd>(.*?)</dd>", html, re.S)
    assert secretaries is not None
    first = re.search(r"<code>([a-z]+)</code>", secretaries.group(1))
    assert first is not None and first.group(1) in waiting  # the first secretary listed has work
