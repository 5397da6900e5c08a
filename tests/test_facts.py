"""Figure facts (engine.facts): kept by every unit of work, equal to a rebuild from scratch.

The dashboards sum ``instance_fact`` rows instead of decoding instance data, so these tests hold
the rows to what the instances say: after the demo's walks through all three processes, after a
termination, after a hand edit (which ``qizhi figures rebuild`` finds and mends), and after
upgrading a database that had instances before the table existed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import delete, func, insert, select, update

from engine import Database, Engine, facts
from engine.migrate import upgrade
from engine.models import AuditEvent, Definition, FigureCount, Instance, InstanceFact, Organisation, User
from engine.reports import pledge_year_figures, yearly_compliance
from tests.helpers import assert_chain_intact, only_task
from tests.web import make_app
from web import engine_of
from web.cli import cli
from web.demo import load_demo


def stored(engine: Engine) -> set[tuple]:
    with engine.db.read() as s:
        return {tuple(r) for r in s.execute(select(InstanceFact.__table__))}


def from_data(engine: Engine) -> set[tuple]:
    """The facts each instance's data implies, computed here without the table."""
    with engine.db.read() as s:
        rows = s.execute(
            select(Instance.id, Instance.process_key, Instance.data, Instance.status, Instance.org_id)
        )
        return {
            (x["instance_id"], x["measure"], x["process_key"], x["year"], x["org_id"], x["value"])
            for r in rows
            for x in facts.rows(
                r.id, r.process_key, r.org_id, facts.facts_of(r.process_key, r.data, r.status)
            )
        }


def sums_agree(engine: Engine) -> bool:
    """``figure_count`` holds exactly the non-zero sums of ``instance_fact``."""
    with engine.db.read() as s:
        kept = {
            tuple(r)
            for r in s.execute(
                select(
                    FigureCount.process_key,
                    FigureCount.year,
                    FigureCount.org_id,
                    FigureCount.measure,
                    FigureCount.value,
                ).where(FigureCount.value != 0)
            )
        }
    expected: Counter[tuple] = Counter()
    for _, measure, process_key, year, org_id, value in stored(engine):
        expected[(process_key, year, org_id, measure)] += value
    return kept == {(*k, v) for k, v in expected.items() if v}


def pledge_year(engine: Engine) -> int:
    with engine.db.read() as s:
        return s.execute(
            select(InstanceFact.year).where(InstanceFact.process_key == facts.PLEDGE).limit(1)
        ).scalar_one()


def test_every_unit_of_work_keeps_the_facts_its_instance_implies(db: Database, tmp_path: Path) -> None:
    app = make_app(db, tmp_path)
    engine = engine_of(app)
    load_demo(engine)  # projects, pledge cycles and gradings walked to many stages by the real engine

    kept = stored(engine)
    assert kept and kept == from_data(engine) and sums_agree(engine)
    assert {p for _, _, p, *_ in kept} == {facts.PLEDGE, facts.LIFECYCLE}
    year = pledge_year(engine)
    with engine.db.read() as s:
        before = pledge_year_figures(s, year)
        cycle = s.execute(
            select(Instance.id, Organisation.code)
            .join(Organisation, Organisation.id == Instance.org_id)
            .where(Instance.process_key == facts.PLEDGE, Instance.status == "running")
            .order_by(Instance.id)
            .limit(1)
        ).one()

    engine.terminate(cycle.id, "chenjing", "调离本支部")

    assert stored(engine) == from_data(engine) and sums_agree(engine)
    assert not {f for f in stored(engine) if f[0] == cycle.id}
    with engine.db.read() as s:
        after = pledge_year_figures(s, year)
    assert after[cycle.code].cycles == before[cycle.code].cycles - 1
    rebuilt = engine.rebuild_facts("admin")
    assert (rebuilt.added, rebuilt.removed, rebuilt.facts) == (0, 0, len(stored(engine)))


def test_rebuild_mends_a_hand_edit_prints_and_audits_what_it_changed(db: Database, tmp_path: Path) -> None:
    app = make_app(db, tmp_path)
    engine = engine_of(app)
    load_demo(engine)
    truth = stored(engine)
    year = pledge_year(engine)
    with engine.db.write() as s:  # someone "fixes" figures in the database behind the engine's back
        s.execute(
            update(FigureCount).where(FigureCount.measure == "made").values(value=FigureCount.value + 5)
        )
        edited = s.execute(select(func.count()).where(FigureCount.measure == "made")).scalar_one()
        gone = s.execute(select(InstanceFact.instance_id).where(InstanceFact.measure == "projects")).scalar()
        s.execute(delete(InstanceFact).where(InstanceFact.instance_id == gone))
        lost = len([f for f in truth if f[0] == gone])
    with engine.db.read() as s:
        skewed = sum(r.made for r in pledge_year_figures(s, year).values())

    result = CliRunner().invoke(cli, ["figures", "rebuild"], obj=_script_info(app))

    assert result.exit_code == 0, result.output
    assert (
        f"figure facts rebuilt: {len(truth)} facts; {edited + lost} added, {edited} removed" in result.output
    )
    assert stored(engine) == truth and sums_agree(engine)
    with engine.db.read() as s:
        assert sum(r.made for r in pledge_year_figures(s, year).values()) == skewed - 5 * edited
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "figures.rebuilt")).scalar_one()
    assert (event.actor, event.payload) == (
        "cli",
        {"facts": len(truth), "added": edited + lost, "removed": edited},
    )
    assert_chain_intact(engine)


def _script_info(app):  # type: ignore[no-untyped-def]
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


def test_upgrading_a_database_with_instances_fills_their_facts(tmp_path: Path) -> None:
    """Migration 0003 on a database that already ran processes under 0002 (its own SQLite file)."""
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(db.engine, "0002")
    data = {
        facts.PLEDGE: {"year": 2026, "pledges": [1, 2, 3], "review_verdict": "approve", "grade": "好"},
        facts.LIFECYCLE: {
            "initiation_decision": "立项",
            "period_start": "2026-03-01",
            "problems_solved": ["甲"],
        },
    }
    with db.engine.begin() as conn:
        conn.execute(insert(Organisation.__table__).values(id=1, code="B1", name="第一党支部", kind="branch"))
        conn.execute(insert(User.__table__).values(id=1, username="sec1", display_name="书记", active=True))
        for n, (key, summary) in enumerate(data.items(), start=1):
            conn.execute(
                insert(Definition.__table__).values(
                    id=n,
                    process_key=key,
                    name=key,
                    version=1,
                    content_hash=str(n) * 64,
                    sources={},
                    deployed_by="designer",
                )
            )
            conn.execute(
                insert(Instance.__table__).values(
                    id=n,
                    definition_id=n,
                    process_key=key,
                    status="running",
                    org_id=1,
                    started_by_id=1,
                    revision=1,
                    state=b"",
                    data=summary,
                )
            )

    upgrade(db.engine)

    with db.read() as s:
        assert s.execute(select(func.count()).select_from(FigureCount)).scalar_one() == 4 + 2
        assert pledge_year_figures(s, 2026)["B1"].as_dict() == {
            "cycles": 1,
            "made": 3,
            "approved": 3,
            "kept_on_time": 0,
            "late_reports": 0,
            "grades": Counter({"好": 1}),
        }
        assert (
            yearly_compliance(s, 2026)["B1"].projects,
            yearly_compliance(s, 2026)["B1"].problems_solved,
        ) == (1, 1)
    db.dispose()


def test_concurrent_units_of_work_on_one_branch_keep_its_sums_exact(pg_engine: Engine) -> None:
    """Eight members of one branch start and commit at the same instant: every delta lands once."""
    from engine.directory import add_user, grant
    from tests.test_concurrency_pg import race
    from tests.test_pledge_cycle import PLEDGES, PROCESS, TIMING, pledge_files

    engine = pg_engine
    members = [f"racer{n}" for n in range(8)]
    with engine.db.write() as s:
        for username in members:
            add_user(s, username, username)
            grant(s, username, "B1", "party_member")
    engine.deploy(pledge_files(), "designer", PROCESS)

    def start(username: str) -> int:
        data = {"year": 2026, **TIMING, "member": username, "title": username, "post": "岗", "peers": []}
        return engine.start(PROCESS, "sec1", "B1", data, business_key=f"pledge:2026:{username}").id

    started = race([lambda u=u: start(u) for u in members])
    assert all(isinstance(i, int) for i in started), started
    commits = [only_task(engine, u, "ut_commit") for u in members]
    done = race(
        [
            lambda t=t, u=u: engine.complete(t.id, u, {"pledges": PLEDGES})
            for t, u in zip(commits, members, strict=True)
        ]
    )
    assert not [r for r in done if isinstance(r, Exception)], done

    with engine.db.read() as s:
        b1 = pledge_year_figures(s, 2026)["B1"]
    assert (b1.cycles, b1.made) == (8, 8 * len(PLEDGES))
    assert stored(engine) == from_data(engine) and sums_agree(engine)
    assert_chain_intact(engine)
