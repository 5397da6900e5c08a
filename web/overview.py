"""The home page's read model: what is deployed, what is running, who has work, is the trail intact.

Reads projections only (definition, instance, human_task rows), never a workflow's state, so the
page stays cheap however many instances run. The audit status comes from the process's chain
monitor (the audit room's), which verifies incrementally.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import Engine, audit
from engine.audit_query import ChainMonitor
from engine.models import Definition, HumanTask, Instance

STATUSES = ("running", "completed", "failed")


@dataclass(frozen=True)
class DeployedDefinition:
    process_key: str
    name: str
    version: int
    deployed_by: str
    deployed_at: datetime


@dataclass(frozen=True)
class OpenTasks:
    process_key: str
    process_name: str
    stage: str | None
    count: int


@dataclass(frozen=True)
class Overview:
    definitions: list[DeployedDefinition]
    instances: dict[str, int]
    open_tasks: list[OpenTasks]
    audit: audit.Verdict


def overview(engine: Engine, chain: ChainMonitor) -> Overview:
    """``chain`` verifies only what is new since its last look: a page view never walks the whole trail."""
    with engine.db.read() as s:
        definitions = _definitions(s)
        names = {d.process_key: d.name for d in reversed(definitions)}  # newest version's name wins
        result = Overview(
            definitions=definitions,
            instances=_instance_counts(s),
            open_tasks=_open_tasks(s, names),
            audit=chain.status(s).verdict,
        )
    return result


def _definitions(s: Session) -> list[DeployedDefinition]:
    rows = s.execute(
        select(
            Definition.process_key,
            Definition.name,
            Definition.version,
            Definition.deployed_by,
            Definition.deployed_at,
        ).order_by(Definition.process_key, Definition.version.desc())
    )
    return [DeployedDefinition(*row) for row in rows]


def _instance_counts(s: Session) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    rows = s.execute(select(Instance.status, func.count()).group_by(Instance.status))
    counts.update({status: n for status, n in rows if status in counts})
    return counts


def _open_tasks(s: Session, names: dict[str, str]) -> list[OpenTasks]:
    rows = s.execute(
        select(HumanTask.process_key, HumanTask.stage, func.count())
        .where(HumanTask.state == "open")
        .group_by(HumanTask.process_key, HumanTask.stage)
        .order_by(HumanTask.process_key, HumanTask.stage)
    )
    return [OpenTasks(key, names.get(key, key), stage, n) for key, stage, n in rows]
