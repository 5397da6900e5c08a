"""``qizhi inbox``, ``qizhi task …`` and ``qizhi instance show``: an approval walked from a shell.

Runs on whichever backend the ``db`` fixture gives (SQLite, or PostgreSQL via QIZHI_TEST_DATABASE_URL).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from engine import Database
from tests.directory import seed_directory
from tests.test_cli import APPROVAL, Run, app, failed, ok, qizhi  # noqa: F401  (app, qizhi: fixtures)
from web import engine_of

GOOD = {"title": "红旗党建", "problems": ["党员活动室不足"], "budget": 5000}


@pytest.fixture
def started(db: Database, qizhi: Run) -> tuple[int, int]:  # noqa: F811
    """The test directory, the approval process deployed, one instance started by sec1 in B1."""
    seed_directory(db)
    ok(qizhi("deploy", *APPROVAL, "--actor", "designer"))
    out = ok(qizhi("start", "approval", "--org", "B1", "--as", "sec1", "--data", '{"title": "红旗党建"}'))
    instance_id = int(re.search(r"instance (\d+)", out).group(1))  # type: ignore[union-attr]
    task_id = int(re.search(r"open task (\d+)", out).group(1))  # type: ignore[union-attr]
    return instance_id, task_id


def complete(qizhi: Run, task_id: int, actor: str, data: object, *extra: str) -> Result:  # noqa: F811
    return qizhi("task", "complete", str(task_id), "--as", actor, "--data", json.dumps(data), *extra)


def test_inbox_lists_the_task_the_user_may_act_on(qizhi: Run, started: tuple[int, int]) -> None:  # noqa: F811
    instance_id, task_id = started

    out = ok(qizhi("inbox", "--as", "sec1"))

    assert len(out.splitlines()) == 1
    ident, process, stage, title, due, holding, where = out.strip().split("  ")
    assert (ident, process, title, where) == (
        str(task_id),
        "approval",
        "填写申报书",
        f"instance {instance_id}",
    )
    assert stage == "-"  # the fixture's lanes name no stages
    assert re.fullmatch(r"due \d{4}-\d\d-\d\d", due)  # the apply task is due in P7D
    assert holding in ("[owner]", "[candidate]")
    assert ok(qizhi("inbox", "--as", "sec1", "--process", "other")).strip() == "no open tasks"
    assert ok(qizhi("inbox", "--as", "office")).strip() == "no open tasks"
    assert "no active user 'ghost'" in failed(qizhi("inbox", "--as", "ghost"))


def test_bad_data_names_every_field_and_changes_nothing(
    qizhi: Run,  # noqa: F811
    started: tuple[int, int],
    app: Flask,  # noqa: F811
) -> None:
    instance_id, task_id = started
    before = engine_of(app).instance(instance_id)

    result = complete(qizhi, task_id, "sec1", {"title": "x", "budget": -1})

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    fields = dict(line.split(": ", 1) for line in result.output.strip().splitlines())
    assert set(fields) == {"title", "budget", "problems"}
    assert "minimum" in fields["budget"] and "required" in fields["problems"]
    after = engine_of(app).instance(instance_id)
    assert after.revision == before.revision and after.data == before.data
    assert str(task_id) in ok(qizhi("inbox", "--as", "sec1"))


def test_invalid_json_is_a_usage_error(qizhi: Run, started: tuple[int, int], tmp_path: Path) -> None:  # noqa: F811
    _, task_id = started
    result = qizhi("task", "complete", str(task_id), "--as", "sec1", "--data", "{")
    assert result.exit_code == 2 and "not valid JSON" in result.output
    assert qizhi("task", "complete", str(task_id), "--as", "sec1", "--data", "[1]").exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{'title': 1}", encoding="utf-8")
    result = qizhi("task", "complete", str(task_id), "--as", "sec1", "--data-file", str(bad))
    assert result.exit_code == 2 and "not valid JSON" in result.output
    both = qizhi("task", "complete", str(task_id), "--as", "sec1", "--data", "{}", "--data-file", str(bad))
    assert both.exit_code == 2 and "not both" in both.output


def test_good_data_moves_it_to_the_office_and_twice_is_a_conflict(
    qizhi: Run,  # noqa: F811
    started: tuple[int, int],
    tmp_path: Path,
) -> None:
    instance_id, task_id = started
    data = tmp_path / "apply.json"
    data.write_text(json.dumps(GOOD, ensure_ascii=False), encoding="utf-8")

    out = ok(qizhi("task", "complete", str(task_id), "--as", "sec1", "--data-file", str(data)))

    first, *opened = out.splitlines()
    assert re.fullmatch(rf"completed task {task_id}; instance {instance_id} is running at stage \S+", first)
    assert len(opened) == 1 and re.fullmatch(r"  open task \d+: 完整性审核 \[party_office\]", opened[0])
    review_id = int(opened[0].split()[2].rstrip(":"))
    office = ok(qizhi("inbox", "--as", "office")).strip()
    assert office.startswith(f"{review_id}  approval  ") and "完整性审核" in office
    assert ok(qizhi("inbox", "--as", "sec1")).strip() == "no open tasks"

    again = failed(complete(qizhi, task_id, "sec1", GOOD))
    assert len(again.strip().splitlines()) == 1 and "already completed" in again


def test_a_stale_revision_is_refused_in_one_line(qizhi: Run, started: tuple[int, int]) -> None:  # noqa: F811
    instance_id, task_id = started
    revision = int(re.search(r"revision: (\d+)", ok(qizhi("instance", "show", str(instance_id)))).group(1))  # type: ignore[union-attr]

    out = failed(complete(qizhi, task_id, "sec1", GOOD, "--revision", str(revision - 1)))

    assert len(out.strip().splitlines()) == 1 and "changed since you loaded it" in out


def test_a_wrong_user_is_forbidden_in_one_line(qizhi: Run, started: tuple[int, int]) -> None:  # noqa: F811
    _, task_id = started

    out = failed(complete(qizhi, task_id, "office", GOOD))

    assert out.strip() == f"Error: office may not act on task {task_id}"
    assert "no task 999999" in failed(complete(qizhi, 999999, "sec1", GOOD))


def test_claim_and_unclaim_the_office_review(qizhi: Run, started: tuple[int, int]) -> None:  # noqa: F811
    _, task_id = started
    opened = ok(complete(qizhi, task_id, "sec1", GOOD)).splitlines()[1]
    review_id = opened.split()[2].rstrip(":")

    assert "[candidate]" in ok(qizhi("inbox", "--as", "office"))
    claimed = ok(qizhi("task", "claim", review_id, "--as", "office"))
    assert f"office claimed task {review_id}: 完整性审核" in claimed
    assert "[claimed]" in ok(qizhi("inbox", "--as", "office", "--mine"))
    assert "may not claim" in failed(qizhi("task", "claim", review_id, "--as", "sec1"))
    assert "holds no claim" in failed(qizhi("task", "unclaim", review_id, "--as", "sec1"))
    assert f"office released task {review_id}" in ok(qizhi("task", "unclaim", review_id, "--as", "office"))
    assert ok(qizhi("inbox", "--as", "office", "--mine")).strip() == "no open tasks"


def test_instance_show_prints_chinese_data_unescaped(qizhi: Run, started: tuple[int, int]) -> None:  # noqa: F811
    instance_id, task_id = started
    ok(complete(qizhi, task_id, "sec1", GOOD))

    out = ok(qizhi("instance", "show", str(instance_id), "--as", "sec1"))

    assert out.startswith(f"instance {instance_id}: approval, running\ntitle: 红旗党建\n")
    assert '"党员活动室不足"' in out and "\\u" not in out
    assert re.search(r"open tasks:\n  open task \d+: 完整性审核 \[party_office\]", out)
    assert "incidents: none" in out
    assert "may not see" in failed(qizhi("instance", "show", str(instance_id), "--as", "outsider"))
    assert "no instance 999999" in failed(qizhi("instance", "show", "999999"))
