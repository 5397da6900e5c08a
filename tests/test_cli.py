"""The ``qizhi`` command, driven as a user would: output and exit codes, never tracebacks.

Runs on whichever backend the ``db`` fixture gives (SQLite, or PostgreSQL via QIZHI_TEST_DATABASE_URL).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import text

from engine import Database
from tests.conftest import FIXTURES
from web import create_app, engine_of
from web.cli import cli

Run = Callable[..., Result]
APPROVAL = [str(FIXTURES / n) for n in ("approval.bpmn", "apply.json", "review.json")]

BROKEN_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="defs" targetNamespace="http://qizhi.test/broken">
  <bpmn:process id="broken" name="缺表单" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="fill" />
    <bpmn:userTask id="fill" name="填写">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="formJsonSchemaFilename" value="missing.json" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
    </bpmn:userTask>
    <bpmn:sequenceFlow id="f2" sourceRef="fill" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


@pytest.fixture
def app(db: Database, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {"QIZHI_DATABASE_URL": db.url, "QIZHI_SECRET_KEY": "test", "TESTING": True},
        instance_path=str(tmp_path / "instance"),
    )
    yield app
    engine_of(app).db.dispose()


@pytest.fixture
def qizhi(app: Flask) -> Run:
    """Run ``qizhi ARGS...`` against the test app; returns click's Result."""
    runner = app.test_cli_runner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args))

    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result: Result) -> str:
    """A refused command: non-zero exit, a message, and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture
def directory(qizhi: Run) -> None:
    ok(qizhi("db", "upgrade"))
    ok(qizhi("org", "add", "HQ", "公司党委", "--kind", "committee"))
    ok(qizhi("org", "add", "B1", "第一党支部", "--parent", "HQ"))
    ok(qizhi("user", "add", "designer", "--name", "流程设计员", "--org", "HQ", "--role", "designer"))
    ok(qizhi("user", "add", "office", "--name", "党建工作部", "--org", "HQ", "--role", "party_office"))
    ok(qizhi("user", "add", "sec1", "--name", "一支部书记", "--org", "B1", "--role", "branch_secretary"))


def test_db_upgrade_is_repeatable(qizhi: Run) -> None:
    assert "up to date" in ok(qizhi("db", "upgrade"))
    assert "up to date" in ok(qizhi("db", "upgrade"))


def test_org_and_user_add(qizhi: Run, app: Flask) -> None:
    ok(qizhi("db", "upgrade"))
    assert "HQ 公司党委 (committee)" in ok(qizhi("org", "add", "HQ", "公司党委", "--kind", "committee"))
    assert "under HQ" in ok(qizhi("org", "add", "B1", "第一党支部", "--parent", "HQ"))
    out = ok(
        qizhi(
            "user",
            "add",
            "member1",
            "--name",
            "党员甲",
            "--org",
            "B1",
            "--role",
            "party_member",
            "--group",
            "finance",
            "--group",
            "culture",
        )
    )
    assert "member1 (党员甲): party_member in B1, groups finance, culture" in out

    assert "already exists" in failed(qizhi("org", "add", "B1", "重复"))
    assert "no organisation 'B9'" in failed(qizhi("org", "add", "B2", "第二党支部", "--parent", "B9"))
    assert "no organisation 'B9'" in failed(qizhi("user", "add", "x", "--org", "B9", "--role", "masses"))
    assert "already exists" in failed(qizhi("user", "add", "member1", "--org", "B1", "--role", "masses"))
    assert "Invalid value for '--role'" in failed(qizhi("user", "add", "y", "--org", "B1", "--role", "king"))
    with engine_of(app).db.read() as s:  # a refused command left nothing half-done
        assert s.execute(text("SELECT count(*) FROM app_user")).scalar_one() == 1


def test_deploy_prints_the_version_and_same_content_keeps_it(qizhi: Run, directory: None) -> None:
    first = ok(qizhi("deploy", *APPROVAL, "--actor", "designer"))
    again = ok(qizhi("deploy", *reversed(APPROVAL), "--actor", "designer", "--key", "approval"))

    assert re.fullmatch(r"deployed approval version 1 \(id \d+\)\n", first)
    assert again == first


def test_deploy_of_a_broken_bundle_lists_each_problem_and_exits_1(
    qizhi: Run, directory: None, tmp_path: Path
) -> None:
    bpmn = tmp_path / "broken.bpmn"
    bpmn.write_text(BROKEN_BPMN, encoding="utf-8")
    shutil.copy(FIXTURES / "apply.json", tmp_path / "apply.json")

    result = qizhi("deploy", str(bpmn), str(tmp_path / "apply.json"), "--actor", "designer")

    assert result.exit_code == 1
    assert "broken.bpmn:fill: form 'missing.json' is not in the bundle" in result.output
    assert "deployed" not in result.output and "Traceback" not in result.output


def test_deploy_by_an_unknown_actor_is_one_line(qizhi: Run, directory: None) -> None:
    out = failed(qizhi("deploy", *APPROVAL))  # default actor 'admin' does not exist here
    assert out.strip() == "Error: no active user 'admin'"


def test_start_lists_the_opened_tasks(qizhi: Run, directory: None) -> None:
    ok(qizhi("deploy", *APPROVAL, "--actor", "designer"))

    out = ok(qizhi("start", "approval", "--org", "B1", "--as", "sec1", "--data", '{"title": "红旗党建"}'))

    assert re.search(r"started approval version 1: instance \d+, running", out)
    assert re.search(r"open task \d+: 填写申报书 \[branch_secretary\]", out)
    assert "no deployed process 'nope'" in failed(qizhi("start", "nope", "--org", "B1", "--as", "sec1"))
    assert "no active user 'ghost'" in failed(qizhi("start", "approval", "--org", "B1", "--as", "ghost"))
    assert "JSON object" in failed(qizhi("start", "approval", "--org", "B1", "--as", "sec1", "--data", "[1]"))
    assert "not valid JSON" in failed(
        qizhi("start", "approval", "--org", "B1", "--as", "sec1", "--data", "{")
    )


def test_audit_verify_passes_then_names_the_tampered_event(qizhi: Run, directory: None, app: Flask) -> None:
    ok(qizhi("deploy", *APPROVAL, "--actor", "designer"))
    ok(qizhi("start", "approval", "--org", "B1", "--as", "sec1", "--data", '{"title": "红旗党建"}'))
    assert "audit chain intact" in ok(qizhi("audit", "verify"))

    with engine_of(app).db.write() as s:
        s.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 2"))
    result = qizhi("audit", "verify")

    assert result.exit_code == 1
    assert "BROKEN at seq 2" in result.output


def test_demo_twice_adds_nothing_the_second_time(qizhi: Run) -> None:
    first = ok(qizhi("demo"))
    second = ok(qizhi("demo"))

    assert re.search(r"demo directory: 7 organisations, 40 people, \d+ roles added", first)
    assert "demo directory: 0 organisations, 0 people, 0 roles added" in second
    assert "deployed" not in second


def test_a_database_without_the_schema_says_what_to_run(tmp_path: Path) -> None:
    bare = create_app({"QIZHI_DATABASE_URL": f"sqlite:///{tmp_path / 'bare.db'}", "QIZHI_SECRET_KEY": "t"})
    try:
        out = failed(bare.test_cli_runner().invoke(cli, ["org", "add", "HQ", "公司党委"]))
    finally:
        engine_of(bare).db.dispose()
    assert "qizhi db upgrade" in out and len(out.strip().splitlines()) == 1


def _qizhi_script() -> list[str]:
    script = Path(sys.executable).with_name("qizhi")
    return [str(script)] if script.exists() else [sys.executable, "-m", "web.cli"]


def test_serve_prints_the_url_and_answers_until_terminated(db: Database, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "QIZHI_DATABASE_URL": db.url,
        "QIZHI_SECRET_KEY": "test",
        "QIZHI_DEMO": "1",
    }
    proc = subprocess.Popen(
        [*_qizhi_script(), "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Qizhi is running" in line:
                break
        match = re.search(r"Qizhi is running: open (http://127\.0\.0\.1:\d+/)", "".join(lines))
        assert match, "".join(lines)
        with urllib.request.urlopen(match.group(1) + "healthz", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(match.group(1), timeout=10) as response:
            assert "王建国" in response.read().decode("utf-8")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0
