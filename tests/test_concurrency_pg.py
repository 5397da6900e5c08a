"""Real threads racing on PostgreSQL: one winner, a clear conflict for the rest, one intact chain."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine import Conflict, Engine, InvalidState
from engine.models import HumanTask
from tests.helpers import assert_chain_intact, files, only_task

APPROVAL = ("approval.bpmn", "apply.json", "review.json")
APPLICATION = {"title": "并发测试项目", "problems": ["问题一"]}


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Start every call at the same instant; return each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as err:  # collected and asserted on below
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_completions_of_one_task_exactly_one_wins(pg_engine: Engine) -> None:
    engine = pg_engine
    engine.deploy(files(*APPROVAL), "designer")
    for _ in range(8):
        inst = engine.start("approval", "sec1", "B1")
        task = only_task(engine, "sec1")
        assert task.instance_id == inst.id
        results = race([lambda t=task: engine.complete(t.id, "sec1", APPLICATION) for _ in range(4)])
        wins = [r for r in results if not isinstance(r, Exception)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert len(wins) == 1, results
        assert all(isinstance(r, (Conflict, InvalidState)) for r in losses), losses
        with engine.db.read() as s:
            row = s.get(HumanTask, task.id)
            assert row.state == "completed"
            assert s.get(type(inst), inst.id).revision == inst.revision + 1
        engine.complete(only_task(engine, "office").id, "office", {"verdict": "reject"})
    assert_chain_intact(engine)


def test_concurrent_claims_one_wins(pg_engine: Engine) -> None:
    engine = pg_engine
    engine.deploy(files("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json"), "designer")
    engine.start("scoring", "judge1", "HQ", {"judges": ["judge1"]})
    from engine.directory import grant

    with engine.db.write() as s:
        grant(s, "judge2", "HQ", "party_office")
    prepare = only_task(engine, "office", "prepare")
    results = race([lambda: engine.claim(prepare.id, "office"), lambda: engine.claim(prepare.id, "judge2")])
    assert sum(not isinstance(r, Exception) for r in results) == 1, results
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))
    assert_chain_intact(engine)


def test_many_writers_keep_one_chain_without_gaps_or_forks(pg_engine: Engine) -> None:
    engine = pg_engine
    engine.deploy(files(*APPROVAL), "designer")
    starters = ["sec1", "sec2"] * 6
    results = race([lambda u=u: engine.start("approval", u, "B1" if u == "sec1" else "B2") for u in starters])
    assert not [r for r in results if isinstance(r, Exception)]
    assert_chain_intact(engine)


def test_different_tasks_of_one_instance_completed_at_once_both_succeed(pg_engine: Engine) -> None:
    engine = pg_engine
    engine.deploy(files("scoring.bpmn", "notify.bpmn", "grade.dmn", "score.json"), "designer")
    inst = engine.start("scoring", "office", "HQ", {"judges": ["judge1", "judge2", "judge3"]})
    sheets = [only_task(engine, judge, "score") for judge in ("judge1", "judge2", "judge3")]
    results = race(
        [
            lambda t=t, j=j: engine.complete(t.id, j, {"points": 80})
            for t, j in zip(sheets, ("judge1", "judge2", "judge3"), strict=True)
        ]
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    with engine.db.read() as s:
        assert s.get(type(inst), inst.id).revision == inst.revision + 3
    assert_chain_intact(engine)


def test_racing_bulk_starts_start_each_member_once(pg_engine: Engine) -> None:
    engine = pg_engine
    engine.deploy(files("loop.bpmn", "report.json"), "designer")
    results = race(
        [
            lambda who=who: engine.start_for_members("loop", who, "B1", "pledge:2026", {"reports": 0})
            for who in ("sec1", "office")
        ]
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    created = [u for run in results for u, _, new in run if new]
    assert sorted(created) == ["member1", "member2"]
    assert_chain_intact(engine)
