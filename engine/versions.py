"""Versions of a deployed process: what changed between two, and moving running instances onto a newer one.

Why here and not in the web layer: the diff and the migration check read BPMN and live workflow state,
which only the engine may do (tests/test_layering.py). The web designer and the CLI call these.

Migration keeps each instance's runtime state (its task ids, data, claimed inbox rows, timers'
due times) and re-points every task at the same-named task spec of the new version. That is only
sound when every step the instance is at, waits in or has completed still exists in the new version;
steps only predicted ahead of it (a later stage) are predicted again from the new version, so those
may be removed or renamed. A dry run says per instance whether that holds and, if not, why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask
from SpiffWorkflow.bpmn.util.diff import diff_workflow
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select

from engine.bundle import BPMN_NS, Compiled
from engine.errors import EngineError, InvalidState
from engine.models import Instance
from engine.safexml import UnsafeXML, parse_xml

if TYPE_CHECKING:
    from engine.runtime import Engine

# Elements that own other elements with ids: their children are compared as elements of their own.
_CONTAINERS = {
    "definitions",
    "process",
    "subProcess",
    "transaction",
    "adHocSubProcess",
    "laneSet",
    "lane",
    "childLaneSet",
    "collaboration",
}
# Active steps: an instance is at (READY, STARTED) or waits in (WAITING) these.
ACTIVE = TaskState.READY | TaskState.WAITING | TaskState.STARTED
# Steps predicted but not reached: they hold no data of their own and may be predicted again.
UNREACHED = TaskState.FUTURE | TaskState.PREDICTED_MASK


@dataclass(frozen=True)
class Element:
    """One BPMN element of a version, by id, as a designer would recognise it."""

    id: str
    type: str
    name: str


@dataclass
class VersionDiff:
    """Elements added, removed and changed (same id, different content) between two versions."""

    added: list[Element] = field(default_factory=list)
    removed: list[Element] = field(default_factory=list)
    changed: list[Element] = field(default_factory=list)
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(
            (self.added, self.removed, self.changed, self.files_added, self.files_removed, self.files_changed)
        )


def elements(sources: Mapping[str, str]) -> dict[str, tuple[Element, str]]:
    """Every BPMN element with an id in the bundle's BPMN files → (element, content signature).

    Diagram layout (BPMNDI) is left out: moving a shape is not a change of the process. A file that
    cannot be parsed safely contributes nothing (deploy would have refused it anyway).
    """
    found: dict[str, tuple[Element, str]] = {}
    for name, text in sorted(sources.items()):
        if not name.lower().endswith((".bpmn", ".bpmn20.xml")):
            continue
        try:
            root = parse_xml(text.encode("utf-8"), name)
        except UnsafeXML:
            continue
        for node in root.iter(f"{{{BPMN_NS}}}*"):
            element_id = node.get("id")
            parent = node.getparent()
            if not element_id or parent is None or etree.QName(parent).localname not in _CONTAINERS:
                continue
            kind = etree.QName(node).localname
            found[element_id] = (Element(element_id, kind, node.get("name") or ""), _signature(node))
    return found


def _signature(node: etree._Element) -> str:
    """The element's own content: attributes and children, without the elements it contains."""
    parts = [etree.QName(node).localname, repr(sorted(node.attrib.items()))]
    for child in node:
        if not isinstance(child.tag, str):
            continue
        if child.get("id") and etree.QName(node).localname in _CONTAINERS:
            continue  # a contained element: compared on its own
        parts.append(" ".join(etree.tostring(child, encoding="unicode", with_tail=False).split()))
    return "\n".join(parts)


def diff_versions(old: Mapping[str, str], new: Mapping[str, str]) -> VersionDiff:
    """Compare two versions' sources: BPMN by element id, other files (forms, DMN) by content."""
    before, after = elements(old), elements(new)
    result = VersionDiff()
    for element_id, (element, signature) in after.items():
        if element_id not in before:
            result.added.append(element)
        elif before[element_id][1] != signature:
            result.changed.append(element)
    result.removed = [element for element_id, (element, _) in before.items() if element_id not in after]
    others_old = {n: t for n, t in old.items() if not n.lower().endswith(".bpmn")}
    others_new = {n: t for n, t in new.items() if not n.lower().endswith(".bpmn")}
    result.files_added = sorted(set(others_new) - set(others_old))
    result.files_removed = sorted(set(others_old) - set(others_new))
    result.files_changed = sorted(n for n in others_old if n in others_new and others_old[n] != others_new[n])
    return result


# --- migration ------------------------------------------------------------------------------------


def blockers(workflow: BpmnWorkflow, target: Compiled) -> list[str]:
    """Why this workflow cannot move onto ``target``: active or waiting steps it does not have."""
    reasons: list[str] = []
    new_main = target.specs[target.process_key]
    new_subs = target.subprocess_specs()
    for sub in [workflow, *workflow.subprocesses.values()]:
        spec_name = sub.spec.name
        new_spec = new_main if sub is workflow else new_subs.get(spec_name)
        if new_spec is None:  # its saved state names the spec, so even a finished one could not be loaded
            reasons.append(f"子流程“{_label(sub.spec)}”({spec_name})在新版本中已不存在")
            continue
        for task in sub.get_tasks(state=ACTIVE, skip_subprocesses=True):
            if task.task_spec.name not in new_spec.task_specs:
                what = "等待中的事件" if task.state == TaskState.WAITING else "当前步骤"
                reasons.append(f"{what}“{_label(task.task_spec)}”({task.task_spec.name})在新版本中已删除")
    return list(dict.fromkeys(reasons))


def _label(spec: object) -> str:
    return getattr(spec, "bpmn_name", None) or getattr(spec, "description", None) or getattr(spec, "name", "")


def move(workflow: BpmnWorkflow, target: Compiled, registry: object) -> None:
    """Re-point ``workflow`` (and its sub-processes) at ``target``'s specs, keeping its runtime state.

    Ready and waiting steps get their future re-predicted from the new version, but keep their data
    and internal data (a timer keeps its due time; a multi-instance item keeps its item).
    Call only when :func:`blockers` found nothing.
    """
    new_main = target.specs[target.process_key]
    new_subs = target.subprocess_specs()
    top_diff, sub_diffs = diff_workflow(registry, workflow, new_main, new_subs)
    workflow.subprocess_specs = new_subs
    _repoint(workflow, top_diff, new_main)
    for sub_id, sub in workflow.subprocesses.items():
        diff = sub_diffs.get(sub_id)
        if diff is not None:
            _repoint(sub, diff, new_subs[sub.spec.name])
    stale = sorted(
        {
            task.task_spec.name
            for sub in [workflow, *workflow.subprocesses.values()]
            for task in sub.tasks.values()
            if sub.spec.task_specs.get(task.task_spec.name) is not task.task_spec
        }
    )
    if stale:  # e.g. a step predicted after a running stage was removed: the saved state could not load
        raise InvalidState(f"流程状态中的步骤在新版本中已不存在:{', '.join(stale)}")


def _repoint(workflow: object, diff: object, spec: object) -> None:
    """SpiffWorkflow's migrate_workflow, but a reset step keeps its data, internal data and state."""
    workflow.spec = spec  # type: ignore[attr-defined]
    for task in workflow.tasks.values():  # type: ignore[attr-defined]
        aligned = diff.alignment.get(task)  # type: ignore[attr-defined]
        if aligned is not None:
            task.task_spec = aligned
    reset = workflow.get_tasks(  # type: ignore[attr-defined]
        state=TaskState.READY | TaskState.WAITING, skip_subprocesses=True
    )
    for task in reset:
        if task.id not in workflow.tasks:  # type: ignore[attr-defined]
            continue
        if task.parent is not None and isinstance(task.parent.task_spec, LoopTask):
            continue  # a multi-instance item: its future is its loop's, which is not reset
        state, data, internal = task.state, task.data, task.internal_data
        task.reset_branch(None)
        task.data, task.internal_data = data, internal
        if task.state != state:
            task._set_state(state)
    _repredict_after_running(workflow, spec)
    if workflow.last_task is not None and workflow.last_task.id not in workflow.tasks:  # type: ignore[attr-defined]
        workflow.last_task = None  # type: ignore[attr-defined]


def _repredict_after_running(workflow: object, spec: object) -> None:
    """Re-predict the steps ahead of a running stage when the new version removed or renamed one.

    A started sub-process (a lifecycle stage) keeps its successors as predicted (not yet reached)
    tasks in the saved state; the reset above only re-predicts below ready and waiting steps, so those
    would keep naming a spec the new version lacks and the state could not load. Unreached tasks carry
    no data of their own, so dropping them and predicting again from the new spec loses nothing.
    """
    specs = spec.task_specs  # type: ignore[attr-defined]
    for anchor in workflow.get_tasks(state=TaskState.STARTED, skip_subprocesses=True):  # type: ignore[attr-defined]
        ahead = [c for c in anchor.children if c.has_state(UNREACHED)]
        if not any(_stale_below(c, specs) for c in ahead):
            continue
        for child in ahead:
            workflow._remove_task(child.id)  # type: ignore[attr-defined]
        present = {c.task_spec for c in anchor.children}
        for output in anchor.task_spec.outputs:
            if output not in present:
                anchor._add_child(output, TaskState.FUTURE)
        for child in anchor.children:
            if child.has_state(UNREACHED):
                child.task_spec._predict(child, mask=UNREACHED)


def _stale_below(task: object, specs: Mapping[str, object]) -> bool:
    return any(specs.get(t.task_spec.name) is not t.task_spec for t in task)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class MigrationCheck:
    """One instance's answer in a dry run: empty ``reasons`` means it can move."""

    instance_id: int
    title: str
    business_key: str | None
    status: str
    revision: int
    reasons: tuple[str, ...]

    @property
    def can_move(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class MigrationResult:
    instance_id: int
    moved: bool
    message: str


_STOPPED = {"suspended": "实例已挂起,恢复后才能迁移", "failed": "实例有未处理的故障,处理后才能迁移"}


def dry_run(engine: Engine, process_key: str, from_version: int, to_version: int) -> list[MigrationCheck]:
    """Per unfinished instance of ``from_version``: can it move to ``to_version``, and if not, why.

    Each instance's saved state is loaded afresh and actually moved in memory, so a failure that the
    name check cannot foresee shows up here rather than in the real migration. Nothing is written.
    """
    with engine.db.read() as s:
        source = engine.definition(s, process_key, from_version)
        target_row = engine.definition(s, process_key, to_version)
        old, target = engine.compiled(source), engine.compiled(target_row)
        rows = (
            s.execute(
                select(Instance)
                .where(
                    Instance.definition_id == source.id, Instance.status.not_in(("completed", "terminated"))
                )
                .order_by(Instance.id)
            )
            .scalars()
            .all()
        )
        checks = []
        for row in rows:
            reasons = [_STOPPED[row.status]] if row.status in _STOPPED else []
            if not reasons:
                reasons = _try_move(engine, row.state, old, target)
            checks.append(
                MigrationCheck(
                    row.id, row.title or "", row.business_key, row.status, row.revision, tuple(reasons)
                )
            )
    return checks


def _try_move(engine: Engine, state: bytes, old: Compiled, target: Compiled) -> list[str]:
    workflow = engine.serializer.loads(
        state, old.specs[old.process_key], old.subprocess_specs(), engine.script_engine
    )
    reasons = blockers(workflow, target)
    if reasons:
        return reasons
    try:
        move(workflow, target, engine.serializer._serializer.registry)
    except InvalidState as err:
        return [err.message]
    except Exception as err:  # SpiffWorkflow refuses some re-predictions; say so instead of failing later
        return [f"无法按新版本重建流程状态:{type(err).__name__}: {err}"]
    return []


def migrate_all(
    engine: Engine, process_key: str, from_version: int, to_version: int, actor: str
) -> list[MigrationResult]:
    """Move every instance the dry run allows, each in its own unit of work; the others stay as they are."""
    results = []
    for check in dry_run(engine, process_key, from_version, to_version):
        if not check.can_move:
            results.append(MigrationResult(check.instance_id, False, ";".join(check.reasons)))
            continue
        try:
            engine.migrate(check.instance_id, actor, to_version, expected_revision=check.revision)
        except EngineError as err:  # changed meanwhile, or refused: this one stays on its version
            results.append(MigrationResult(check.instance_id, False, err.message))
        else:
            results.append(MigrationResult(check.instance_id, True, ""))
    return results
