"""Find the deployable bundles in the repository's ``workflows/`` and ``forms/`` folders.

Each BPMN file whose process no other file calls is one bundle: that file, the files defining the
processes it calls (transitively), every DMN in ``workflows/`` and every form in ``forms/``. The
engine deduplicates by content hash, so deploying the same folders again adds nothing. Files that
cannot be read as XML are still handed to the engine, which names their problem; nothing is skipped
silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.safexml import UnsafeXML, parse_xml

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
FORMS = ROOT / "forms"


@dataclass(frozen=True)
class WorkflowBundle:
    """One deployment: the process to deploy (None: let the engine choose) and its files by base name.

    A missing ``isExecutable`` counts as executable, as SpiffWorkflow reads it.
    """

    process_key: str | None
    files: dict[str, bytes]


@dataclass
class _BpmnFile:
    path: Path
    executable: list[str]
    defines: list[str]
    calls: set[str]


def discover(workflows: Path = WORKFLOWS, forms: Path = FORMS) -> list[WorkflowBundle]:
    """Every bundle in the folders, in file-name order; an empty or missing folder gives none."""
    bpmn = [_read(p) for p in sorted(workflows.glob("*.bpmn"))] if workflows.is_dir() else []
    if not bpmn:
        return []
    shared = _contents(sorted(workflows.glob("*.dmn")))
    if forms.is_dir():
        shared.update(_contents(sorted(forms.glob("*.json"))))
    definer = {pid: f for f in bpmn for pid in f.defines}
    called = {pid for f in bpmn for pid in f.calls}
    bundles = []
    for f in bpmn:
        roots = [pid for pid in f.executable if pid not in called]
        if not roots and f.executable:
            continue  # only ever called: deployed with each caller
        files = {**shared, **_contents(_needed(f, definer))}
        for key in roots or [None]:
            bundles.append(WorkflowBundle(key, files))
    return bundles


def _read(path: Path) -> _BpmnFile:
    try:
        tree = parse_xml(path.read_bytes(), path.name)
    except UnsafeXML:
        return _BpmnFile(path, [], [], set())
    processes = list(tree.iter(f"{{{BPMN_NS}}}process"))
    return _BpmnFile(
        path,
        executable=[p.get("id", "") for p in processes if p.get("isExecutable", "true") == "true"],
        defines=[p.get("id", "") for p in processes],
        calls={c.get("calledElement", "") for c in tree.iter(f"{{{BPMN_NS}}}callActivity")},
    )


def _needed(start: _BpmnFile, definer: dict[str, _BpmnFile]) -> list[Path]:
    seen: dict[Path, _BpmnFile] = {}
    todo = [start]
    while todo:
        f = todo.pop()
        if f.path in seen:
            continue
        seen[f.path] = f
        todo.extend(definer[c] for c in f.calls if c in definer)
    return sorted(seen)


def _contents(paths: Iterable[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}
