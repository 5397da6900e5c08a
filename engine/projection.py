"""What a workflow's state means for the tables around it: inbox rows, due jobs, message waits.

Reading a live SpiffWorkflow object is confined to this module; everything else reads the rows it
produces, so the inbox, the worker and the lists never deserialize a workflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskState

from engine.bundle import FORM_PROPERTY

ISO_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


@dataclass
class HumanTaskInfo:
    guid: str
    spec: str
    title: str
    form: str | None
    lane: str | None
    owner: str | None
    due_at: datetime | None
    priority: int
    stage: str | None
    remind_before: timedelta | None


def properties(task: Task) -> dict[str, str]:
    return (getattr(task.task_spec, "extensions", None) or {}).get("properties", {}) or {}


def ready_human_tasks(workflow: BpmnWorkflow) -> list[Task]:
    return workflow.get_tasks(state=TaskState.READY, manual=True)


def describe(task: Task, now: datetime) -> HumanTaskInfo:
    """Evaluate a user task's extension properties (sandboxed) into the inbox row's columns."""
    props = properties(task)
    spec = task.task_spec
    return HumanTaskInfo(
        guid=str(task.id),
        spec=spec.bpmn_id or spec.name,
        title=_title(task),
        form=props.get(FORM_PROPERTY),
        lane=getattr(spec, "lane", None),
        owner=_owner(task, props),
        due_at=_due(task, props, now),
        priority=int(_evaluate(task, props.get("priority")) or 0),
        stage=stage_of(task),
        remind_before=_remind_before(task, props),
    )


def _title(task: Task) -> str:
    """The task's name; a multi-instance item also says which item it is (评委打分 · judge2)."""
    spec = task.task_spec
    title = spec.bpmn_name or spec.bpmn_id or spec.name
    item = getattr(getattr(task.parent, "task_spec", None), "input_item", None)
    value = task.data.get(item.bpmn_id) if item is not None else None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{title} · {value}"
    return title


def _evaluate(task: Task, expression: str | None) -> Any:
    if not expression:
        return None
    return task.workflow.script_engine.evaluate(task, expression)


def _owner(task: Task, props: dict[str, str]) -> str | None:
    value = _evaluate(task, props.get("owner"))
    return str(value) if value else None


def _due(task: Task, props: dict[str, str], now: datetime) -> datetime | None:
    return as_datetime(_evaluate(task, props.get("dueDate")), now)


DEFAULT_REMINDER = "P1D"


def _remind_before(task: Task, props: dict[str, str]) -> timedelta | None:
    """How long before its due date a task's people are reminded (``reminderBefore``, default a day)."""
    value = _evaluate(task, props["reminderBefore"]) if "reminderBefore" in props else DEFAULT_REMINDER
    if not value:
        return None
    if isinstance(value, timedelta):
        return value
    parsed = TimerEventDefinition.parse_iso_duration(str(value))
    return TimerEventDefinition.get_timedelta_from_start(parsed)


def as_datetime(value: Any, now: datetime) -> datetime | None:
    """A due date from what a process may say: a datetime, a date, an ISO string or duration."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(23, 59, 59), tzinfo=UTC)
    if isinstance(value, timedelta):
        return now + value
    text = str(value).strip()
    if ISO_DURATION.match(text.upper()):
        parsed = TimerEventDefinition.parse_iso_duration(text)
        return now + TimerEventDefinition.get_timedelta_from_start(parsed, now)
    if len(text) == 10:
        return as_datetime(date.fromisoformat(text), now)
    return as_datetime(datetime.fromisoformat(text), now)


def stage_of(task: Task) -> str | None:
    """The stage a task belongs to: its own ``stage`` property, else its outermost sub-process's.

    The lifecycle draws each of its six stages as one expanded sub-process, so the outermost
    enclosing sub-process (its ``stage`` property, or its name) is the stage a user sees.
    """
    own = properties(task).get("stage")
    if own:
        return own
    stage = None
    workflow = task.workflow
    while getattr(workflow, "parent_task_id", None) is not None:
        parent = workflow.top_workflow.get_task_from_id(workflow.parent_task_id)
        stage = properties(parent).get("stage") or parent.task_spec.bpmn_name or stage
        workflow = parent.workflow
    return stage


def waiting_event_tasks(workflow: BpmnWorkflow) -> list[Task]:
    return [
        t
        for t in workflow.get_tasks(state=TaskState.WAITING)
        if getattr(t.task_spec, "event_definition", None) is not None
    ]


def timer_due(task: Task) -> datetime | None:
    """When a waiting timer is due, from the value SpiffWorkflow computed when it started waiting."""
    event = task.task_spec.event_definition
    if not isinstance(event, TimerEventDefinition):
        return None
    value = task._get_internal_data("event_value")
    if value is None:
        return None
    if isinstance(event, CycleTimerEventDefinition):
        return datetime.fromisoformat(value["next"]) if value.get("cycles", 0) != 0 else None
    if str(value).upper().startswith("P"):
        return None
    return TimerEventDefinition.get_datetime(str(value))


def mark_timer_due(task: Task) -> None:
    """Tell SpiffWorkflow a timer is due because our clock says so (jobs may run ahead of its clock)."""
    event = task.task_spec.event_definition
    if isinstance(event, CycleTimerEventDefinition):
        value = task._get_internal_data("event_value")
        if value:
            value["next"] = datetime(2000, 1, 1, tzinfo=UTC).isoformat()
        return
    task._set_internal_data(event_fired=True)


def message_name(task: Task) -> str | None:
    event = task.task_spec.event_definition
    return event.name if isinstance(event, MessageEventDefinition) else None


def instance_data(workflow: BpmnWorkflow) -> dict[str, Any]:
    """The data a person thinks of as "the instance's": the latest completed step's, or the final.

    The latest step may be inside a stage's sub-process, whose data reaches the top workflow only
    when the stage ends, so every (sub-)workflow's last task is a candidate.
    """
    if workflow.completed:
        return dict(workflow.data)
    candidates = [
        wf.last_task for wf in (workflow, *workflow.subprocesses.values()) if wf.last_task is not None
    ]
    if not candidates:
        return {}
    return dict(max(candidates, key=lambda t: t.last_state_change).data)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    changed = {k: [before[k], after[k]] for k in before.keys() & after.keys() if before[k] != after[k]}
    return {
        "added": {k: after[k] for k in after.keys() - before.keys()},
        "removed": sorted(before.keys() - after.keys()),
        "changed": changed,
    }
