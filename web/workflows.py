"""Find the deployable bundles in the repository's ``workflows/`` and ``forms/`` folders.

Each BPMN file whose process no other file calls is one bundle: that file, the files defining the
processes it calls (transitively), and just the DMN files and forms those diagrams reference, so
changing one process's form does not make a new version of every other process. The engine
deduplicates by content hash, so deploying the same folders again adds nothing. A reference that
no file satisfies is left for the engine to report. Files that
cannot be read as XML are still handed to the engine, which names their problem; nothing is skipped
silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.bundle import BPMN_NS, FORM_PROPERTY, SPIFF_NS
from engine.safexml import UnsafeXML, parse_xml

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
    forms: set[str] = field(default_factory=set)
    decisions: set[str] = field(default_factory=set)


def discover(workflows: Path = WORKFLOWS, forms: Path = FORMS) -> list[WorkflowBundle]:
    """Every bundle in the folders, in file-name order; an empty or missing folder gives none."""
    bpmn = [_read(p) for p in sorted(workflows.glob("*.bpmn"))] if workflows.is_dir() else []
    if not bpmn:
        return []
    decision_files = _decision_files(sorted(workflows.glob("*.dmn")))
    form_files = {p.name: p for p in sorted(forms.glob("*.json"))} if forms.is_dir() else {}
    definer = {pid: f for f in bpmn for pid in f.defines}
    called = {pid for f in bpmn for pid in f.calls}
    bundles = []
    for f in bpmn:
        roots = [pid for pid in f.executable if pid not in called]
        if not roots and f.executable:
            continue  # only ever called: deployed with each caller
        needed = _needed(f, definer)
        extra = {form_files[n] for b in needed for n in b.forms if n in form_files}
        extra |= {decision_files[d] for b in needed for d in b.decisions if d in decision_files}
        files = _contents([b.path for b in needed] + sorted(extra))
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
        forms={
            prop.get("value", "")
            for prop in tree.iter(f"{{{SPIFF_NS}}}property")
            if prop.get("name") == FORM_PROPERTY
        },
        decisions={(d.text or "").strip() for d in tree.iter(f"{{{SPIFF_NS}}}calledDecisionId")},
    )


def _decision_files(paths: Iterable[Path]) -> dict[str, Path]:
    """Decision id -> the DMN file that defines it (a file that cannot be read defines nothing)."""
    found: dict[str, Path] = {}
    for path in paths:
        try:
            tree = parse_xml(path.read_bytes(), path.name)
        except UnsafeXML:
            continue
        for node in tree.iter():
            if isinstance(node.tag, str) and node.tag.endswith("}decision") and node.get("id"):
                found[node.get("id")] = path
    return found


def _needed(start: _BpmnFile, definer: dict[str, _BpmnFile]) -> list[_BpmnFile]:
    seen: dict[Path, _BpmnFile] = {}
    todo = [start]
    while todo:
        f = todo.pop()
        if f.path in seen:
            continue
        seen[f.path] = f
        todo.extend(definer[c] for c in f.calls if c in definer)
    return [seen[p] for p in sorted(seen)]


def _contents(paths: Iterable[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}
