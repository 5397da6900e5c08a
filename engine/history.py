"""Keep a workflow's runtime state proportional to where it is, not to how long it has run.

SpiffWorkflow keeps every completed task in its tree. A process that loops (monthly reports,
quarterly reviews) grows a chain three tasks deeper per round: saving and loading it gets slower
every time, and past depth 1000 SpiffWorkflow's task iterator silently stops looking, so the
task a user should see next disappears. The audit trail already records every step, so the
runtime tree only needs its recent past: this module cuts the straight, fully completed part
of the chain below the root, keeping the last few tasks (``last_task``, a gateway's inputs).
"""

from __future__ import annotations

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskState

KEEP = 12  # completed tasks kept above the live part of a chain
SLACK = 12  # cut only once this many more have piled up, so most saves do no work


def compact(workflow: BpmnWorkflow, keep: int = KEEP, slack: int = SLACK) -> int:
    """Drop old completed history from the top workflow and its sub-workflows; return how many tasks."""
    removed = _compact_one(workflow, workflow, keep, slack)
    for sub in list(workflow.subprocesses.values()):
        removed += _compact_one(workflow, sub, keep, slack)
    return removed


def _compact_one(top: BpmnWorkflow, wf: BpmnWorkflow, keep: int, slack: int) -> int:
    root = wf.task_tree
    chain = _completed_chain(top, root)
    if len(chain) <= keep + slack:
        return 0
    cut, first_kept = chain[: len(chain) - keep], chain[len(chain) - keep]
    root._children = [first_kept.id]
    first_kept._parent = root.id
    for task in cut:
        del wf.tasks[task.id]
        _drop_finished_subprocess(top, task)
    return len(cut)


def _completed_chain(top: BpmnWorkflow, root: Task) -> list[Task]:
    """Completed tasks hanging in a single line below the root, oldest first."""
    chain: list[Task] = []
    node = root
    while len(node._children) == 1:
        child = node.children[0]
        if child is None or child.state != TaskState.COMPLETED or len(child._children) != 1:
            break
        sub = top.subprocesses.get(child.id)
        if sub is not None and not sub.completed:
            break
        chain.append(child)
        node = child
    return chain


def _drop_finished_subprocess(top: BpmnWorkflow, task: Task) -> None:
    sub = top.subprocesses.pop(task.id, None)
    if sub is None:
        return
    for inner in list(sub.tasks.values()):
        _drop_finished_subprocess(top, inner)
