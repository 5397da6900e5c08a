"""What each instance adds to the yearly figures, kept as narrow rows beside it.

A province runs 100,000 pledge cycles a year; summing them by decoding every instance's data took
eleven seconds. Instead each process has one rule here mapping an instance's summary to its facts
(the year it counts in and a value per measure), the unit of work rewrites an instance's facts in
the same transaction as its state whenever they change and adds the difference to the sums in
``figure_count``, which is what the dashboards read.
Because the figure, its drill-down and ``rebuild`` all go through the same rule, they cannot
disagree.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Table, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from engine import audit
from engine.figures import LIFECYCLE
from engine.models import FigureCount, Instance, InstanceFact

PLEDGE = "pledge_cycle"
KEPT_ON_TIME = "按期兑现"
APPROVED_PROJECT = "立项"
GRADE_PREFIX = "grade:"


@dataclass(frozen=True)
class Facts:
    """The year an instance counts in and its non-zero measures."""

    year: int
    measures: tuple[tuple[str, int], ...]

    @property
    def as_dict(self) -> dict[str, int]:
        return dict(self.measures)


def _facts(year: int, measures: dict[str, int]) -> Facts:
    return Facts(year, tuple(sorted((k, v) for k, v in measures.items() if v)))


def pledge_facts(data: dict[str, Any], status: str) -> Facts | None:
    """A cycle's year: pledges made (latest 承诺书), approved (review verdict approve), kept on time
    (year-end results 按期兑现), late quarterly reports, and its grade. Terminated cycles count nothing."""
    year = data.get("year")
    if status == "terminated" or not isinstance(year, int):
        return None
    made = len(data.get("pledges") or [])
    measures = {
        "cycles": 1,
        "made": made,
        "approved": made if data.get("review_verdict") == "approve" else 0,
        "kept_on_time": sum(1 for r in data.get("results") or [] if r.get("outcome") == KEPT_ON_TIME),
        "late_reports": sum(1 for r in data.get("reports") or [] if r.get("late")),
    }
    if data.get("grade"):
        measures[GRADE_PREFIX + str(data["grade"])] = 1
    return _facts(year, measures)


def lifecycle_facts(data: dict[str, Any], status: str) -> Facts | None:
    """A project counts toward compliance in the year its period starts, once approved (立项), with
    the problems its summary lists as solved."""
    start = str(data.get("period_start", ""))
    if data.get("initiation_decision") != APPROVED_PROJECT or not start[:4].isdigit():
        return None
    return _facts(int(start[:4]), {"projects": 1, "problems_solved": len(data.get("problems_solved") or [])})


RULES: dict[str, Callable[[dict[str, Any], str], Facts | None]] = {
    PLEDGE: pledge_facts,
    LIFECYCLE: lifecycle_facts,
}


def facts_of(process_key: str, data: dict[str, Any] | None, status: str) -> Facts | None:
    rule = RULES.get(process_key)
    return rule(data or {}, status) if rule else None


def rows(instance_id: int, process_key: str, org_id: int, facts: Facts | None) -> list[dict[str, Any]]:
    if facts is None:
        return []
    return [
        {
            "instance_id": instance_id,
            "measure": measure,
            "process_key": process_key,
            "year": facts.year,
            "org_id": org_id,
            "value": value,
        }
        for measure, value in facts.measures
    ]


def refresh(s: Session, instance: Instance, before: Facts | None) -> None:
    """Rewrite ``instance``'s facts if its summary now says something else than ``before`` did, and
    add the difference to the organisation's sums.

    Most units of work change nothing a figure counts, and then this costs no statement at all.
    """
    after = facts_of(instance.process_key, instance.data, instance.status)
    if after == before:
        return
    s.execute(delete(InstanceFact).where(InstanceFact.instance_id == instance.id))
    new = rows(instance.id, instance.process_key, instance.org_id, after)
    if new:
        s.execute(insert(InstanceFact), new)
    _add(s, instance.process_key, instance.org_id, _delta(before, after))


def _delta(before: Facts | None, after: Facts | None) -> dict[tuple[int, str], int]:
    out: Counter[tuple[int, str]] = Counter()
    for facts, sign in ((before, -1), (after, 1)):
        for measure, value in facts.measures if facts else ():
            out[(facts.year, measure)] += sign * value
    return {key: n for key, n in out.items() if n}


def _add(s: Session, process_key: str, org_id: int, delta: dict[tuple[int, str], int]) -> None:
    """Upsert each changed sum, in key order (see FigureCount)."""
    upsert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    for (year, measure), n in sorted(delta.items()):
        row = {"process_key": process_key, "year": year, "org_id": org_id, "measure": measure, "value": n}
        statement = upsert(FigureCount).values(row)
        s.execute(
            statement.on_conflict_do_update(
                index_elements=["process_key", "year", "org_id", "measure"],
                set_={"value": FigureCount.value + statement.excluded.value},
            )
        )


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild wrote, and how many facts and sums it found out of step (added, removed)."""

    facts: int
    added: int
    removed: int


def rebuild(s: Session, actor: str = "system") -> Rebuilt:
    """Recompute every instance's facts and the sums from instance data, audited with what changed.

    The unit of work keeps both in step, so ``added`` and ``removed`` are 0 unless rows were
    written around the engine (a restore, a hand edit): the audit event says so either way.
    """
    before = _snapshot(s)
    s.execute(delete(FigureCount))
    s.execute(delete(InstanceFact))
    fill(s, InstanceFact.__table__, Instance.__table__)
    sum_up(s, InstanceFact.__table__, FigureCount.__table__)
    after = _snapshot(s)
    written = sum(1 for row in after if row[0] == "fact")
    result = Rebuilt(written, len(after - before), len(before - after))
    event = audit.PendingEvent(actor=actor, action="figures.rebuilt", payload=asdict(result))
    audit.append(s, [event])
    return result


def sum_up(conn: Session | Connection, fact_table: Table, count_table: Table) -> None:
    """Fill the sums from the facts in one statement (rebuild and migration 0003)."""
    f = fact_table.c
    keys = (f.process_key, f.year, f.org_id, f.measure)
    totals = select(*keys, func.sum(f.value)).group_by(*keys)
    conn.execute(
        insert(count_table).from_select(["process_key", "year", "org_id", "measure", "value"], totals)
    )


def _snapshot(s: Session) -> set[tuple[Any, ...]]:
    """Every fact and every non-zero sum, to tell what a rebuild changed."""
    c, n = InstanceFact.__table__.c, FigureCount.__table__.c
    kept = {("fact", *r) for r in s.execute(select(c.instance_id, c.measure, c.year, c.org_id, c.value))}
    sums = select(n.process_key, n.year, n.org_id, n.measure, n.value).where(n.value != 0)
    return kept | {("sum", *r) for r in s.execute(sums)}


def fill(conn: Session | Connection, fact_table: Table, instance_table: Any, batch: int = 2000) -> int:
    """Write the facts of every instance in ``instance_table`` into ``fact_table``, in id order.

    Core tables rather than the models, so that migration 0003 fills its new table with these rules
    whatever the models look like by the time it runs.
    """
    i = instance_table.c
    query = (
        select(i.id, i.process_key, i.data, i.status, i.org_id)
        .where(i.process_key.in_(sorted(RULES)))
        .order_by(i.id)
    )
    written, last = 0, 0
    while chunk := conn.execute(query.where(i.id > last).limit(batch)).all():
        new = [r for x in chunk for r in rows(x.id, x.process_key, x.org_id, facts_of(*x[1:4]))]
        if new:
            conn.execute(insert(fact_table), new)
            written += len(new)
        last = chunk[-1].id
    return written


def sums(
    s: Session, process_key: str, year: int, within: Collection[int] | None = None
) -> dict[int, dict[str, int]]:
    """Per organisation id: each measure's total for the year (measures summing to 0 left out).

    Read through Core: a province is 36,000 cells, and ORM row handling would cost more than the query.
    """
    c = FigureCount.__table__.c
    query = select(c.org_id, c.measure, c.value).where(
        c.process_key == process_key, c.year == year, c.value != 0
    )
    if within is not None:
        query = query.where(c.org_id.in_(sorted(within)))
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for org_id, measure, total in s.connection().execute(query):
        out[org_id][measure] = total
    return dict(out)


def behind(s: Session, process_key: str, year: int, org_id: int, measure: str) -> dict[int, int]:
    """The instances one cell of ``sums`` adds up, with what each contributes."""
    query = select(InstanceFact.instance_id, InstanceFact.value).where(
        InstanceFact.process_key == process_key,
        InstanceFact.year == year,
        InstanceFact.org_id == org_id,
        InstanceFact.measure == measure,
    )
    return {r.instance_id: r.value for r in s.execute(query.order_by(InstanceFact.instance_id))}
