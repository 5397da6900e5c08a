"""Helpers for tests/test_lifecycle.py: the bundle, extra people, a yearly compliance query."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select

from engine import Engine
from engine.models import Instance, Organisation

ROOT = Path(__file__).resolve().parent.parent
PROCESS = "project_lifecycle"


def lifecycle_files() -> dict[str, bytes]:
    paths = [ROOT / "workflows" / "project_lifecycle.bpmn"]
    paths += sorted((ROOT / "workflows").glob("lifecycle_*.dmn"))
    paths += sorted((ROOT / "forms").glob("lifecycle_*.json"))
    return {p.name: p.read_bytes() for p in paths}


def yearly_compliance(engine: Engine, year: int) -> dict[str, dict[str, Any]]:
    """Per organisation (code) and year: projects run and problems solved, and the two yearly rules.

    A project counts for the year its period starts in once it is approved (立项); a problem counts
    as solved when the branch lists it in its summary (problems_solved). Rules: at least one
    project and at least two problems a year (每年至少实施1个党建项目,至少研究解决2个基层党建新问题).
    """
    tally: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"projects": 0, "problems_solved": 0, "titles": []}
    )
    with engine.db.read() as s:
        rows = s.execute(
            select(Organisation.code, Instance.data, Instance.title)
            .join(Organisation, Organisation.id == Instance.org_id)
            .where(Instance.process_key == PROCESS)
        ).all()
    for code, data, title in rows:
        data = data or {}
        if data.get("initiation_decision") != "立项" or not str(data.get("period_start", "")).startswith(
            str(year)
        ):
            continue
        row = tally[code]
        row["projects"] += 1
        row["titles"].append(title)
        row["problems_solved"] += len(data.get("problems_solved") or [])
    for row in tally.values():
        row["compliant"] = row["projects"] >= 1 and row["problems_solved"] >= 2
    return dict(tally)
