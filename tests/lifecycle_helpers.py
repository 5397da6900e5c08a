"""Helpers for tests/test_lifecycle.py: the bundle, extra people, a yearly compliance query."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCESS = "project_lifecycle"


def lifecycle_files() -> dict[str, bytes]:
    paths = [ROOT / "workflows" / "project_lifecycle.bpmn"]
    paths += sorted((ROOT / "workflows").glob("lifecycle_*.dmn"))
    paths += sorted((ROOT / "forms").glob("lifecycle_*.json"))
    return {p.name: p.read_bytes() for p in paths}
