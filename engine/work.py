"""One unit of work per state change.

Every command (start, complete, fire a timer, deliver a message) runs inside ``UnitOfWork``:
load the instance and check its revision → rebuild the workflow against the cached spec → apply
the command and run engine steps in the sandbox → project inbox rows, jobs and message waits →
append hash-chained audit events → serialize, bump the revision, commit. Because there is one
path, no command can forget the audit trail, the inbox or the timers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowDataException
from SpiffWorkflow.exceptions import WorkflowException
from SpiffWorkflow.task import Task
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from engine import audit, directory, facts, history, projection
from engine.bundle import Compiled
from engine.models import HumanTask, Incident, Instance, Job, MessageWait
from engine.sandbox import ScriptTimeout, find_script_refusal

SYSTEM = "system"


@dataclass
class UnitOfWork:
    """A loaded instance and everything a command needs to change it and say what it changed."""

    session: Session
    instance: Instance
    workflow: BpmnWorkflow
    compiled: Compiled
    actor: str
    now: datetime
    events: list[audit.PendingEvent] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    _closed_with_due_date: list[str] = field(default_factory=list)

    def record(self, action: str, payload: dict[str, Any], task_guid: str | None = None) -> None:
        self.events.append(
            audit.PendingEvent(
                actor=self.actor,
                action=action,
                payload=payload,
                instance_id=self.instance.id,
                task_guid=task_guid,
                definition_id=self.instance.definition_id,
                org_id=self.instance.org_id,
            )
        )

    def run_engine(self, action: Callable[[], None] | None = None) -> bool:
        """Apply ``action`` and run engine steps; a failing script becomes an incident, not a crash."""
        try:
            if action is not None:
                action()
            self.workflow.do_engine_steps(did_complete_task=self._stepped)
        except WorkflowException as err:
            self._fail(err)
            return False
        return True

    def _stepped(self, task: Task) -> None:
        self.steps.append(task.task_spec.bpmn_id or task.task_spec.name)

    def _fail(self, err: WorkflowException) -> None:
        """Stop the instance with an incident: its timers are held until someone retries it."""
        refusal = find_script_refusal(err)
        kind = incident_kind(err, refusal)
        message = f"{err} [{type(refusal or getattr(err, 'exception', None) or err).__name__}]"[:4000]
        task = getattr(err, "task", None)
        self.instance.status = "failed"
        incident = Incident(instance_id=self.instance.id, kind=kind, message=message)
        self.session.add(incident)
        self.session.execute(
            update(Job)
            .where(Job.instance_id == self.instance.id, Job.state == "pending")
            .values(state="held")
        )
        self.session.flush()
        self.record(
            "incident.raised",
            {
                "incident": incident.id,
                "kind": kind,
                "message": message,
                "element": task.task_spec.bpmn_id if task is not None else None,
            },
            task_guid=str(task.id) if task is not None else None,
        )

    # --- projection ------------------------------------------------------------------------------

    def finish(self, serializer_dumps: Callable[[BpmnWorkflow], bytes]) -> None:
        """Project, audit, serialize. The caller's transaction commits right after."""
        if self.steps:
            self.record("engine.steps", {"completed": self.steps})
        self._project_human_tasks()
        self._drop_reminders_of_closed_tasks()
        if self.compiled.waits_for_events:
            self._project_waits()
        self._summarise()
        history.compact(self.workflow)
        self.instance.state = serializer_dumps(self.workflow)
        self.instance.updated_at = self.now
        self.session.flush()  # the revision check happens here: a stale instance raises now
        audit.append(self.session, self.events, self.now)

    def _project_human_tasks(self) -> None:
        rows = {
            row.task_guid: row
            for row in self.session.execute(
                select(HumanTask).where(HumanTask.instance_id == self.instance.id, HumanTask.state == "open")
            ).scalars()
        }
        ready = {str(t.id): t for t in projection.ready_human_tasks(self.workflow)}
        for guid, row in rows.items():
            if guid not in ready:
                self.close_task(row, "cancelled")
                self.record("task.cancelled", {"task": row.id, "title": row.title}, task_guid=guid)
        for guid, task in ready.items():
            if guid not in rows:
                self._open_task(task)

    def _open_task(self, task: Task) -> None:
        info = projection.describe(task, self.now)
        owner = directory.active_user_id(self.session, info.owner) if info.owner else None
        if owner is not None:
            assignee, assignment, candidate = owner, "owner", None
        elif info.lane:
            assignee, assignment = None, None
            candidate = directory.candidate_key(self.session, info.lane, self.instance.org_id)
        else:
            assignee, assignment, candidate = self.instance.started_by_id, "initiator", None
        row = HumanTask(
            instance_id=self.instance.id,
            task_guid=info.guid,
            task_spec=info.spec,
            title=info.title,
            form=info.form,
            lane=info.lane,
            org_id=self.instance.org_id,
            process_key=self.instance.process_key,
            stage=info.stage,
            candidate_key=candidate,
            assignee_id=assignee,
            assignment=assignment,
            priority=info.priority,
            due_at=info.due_at,
            created_at=self.now,
        )
        self.session.add(row)
        self.session.flush()
        self._schedule_reminder(row, info.remind_before)
        self.record(
            "task.created",
            {
                "task": row.id,
                "title": row.title,
                "lane": row.lane,
                "candidates": candidate,
                "assignee": info.owner,
                "due_at": row.due_at,
                "stage": row.stage,
            },
            task_guid=info.guid,
        )

    def _schedule_reminder(self, row: HumanTask, remind_before: timedelta | None) -> None:
        """A reminder job ahead of the due date; the worker turns it into notifications (engine.notify).

        When that moment has passed (or no reminder is wanted) the job waits for the due date, to
        escalate. A task already overdue when it opens gets none: the inbox shows it overdue.
        """
        if row.due_at is None or row.due_at <= self.now:
            return
        at = row.due_at - remind_before if remind_before is not None else row.due_at
        self.session.add(
            Job(
                instance_id=self.instance.id,
                kind="reminder",
                task_guid=row.task_guid,
                due_at=at if at > self.now else row.due_at,
            )
        )

    def close_task(self, row: HumanTask, state: str, by: int | None = None) -> None:
        """Mark an inbox row done; its reminder, if it had a due date, goes with it."""
        row.state, row.completed_at = state, self.now
        if by is not None:
            row.completed_by_id = by
        if row.due_at is not None:
            self._closed_with_due_date.append(row.task_guid)

    def _drop_reminders_of_closed_tasks(self) -> None:
        if not self._closed_with_due_date:  # the common case costs no statement
            return
        self.session.execute(
            delete(Job).where(
                Job.instance_id == self.instance.id,
                Job.kind == "reminder",
                Job.task_guid.in_(self._closed_with_due_date),
            )
        )

    def _project_waits(self) -> None:
        waiting = projection.waiting_event_tasks(self.workflow)
        self._project_timers(waiting)
        names = {n for n in (projection.message_name(t) for t in waiting) if n}
        existing = set(
            self.session.execute(
                select(MessageWait.name).where(MessageWait.instance_id == self.instance.id)
            ).scalars()
        )
        if existing - names:
            self.session.execute(
                delete(MessageWait).where(
                    MessageWait.instance_id == self.instance.id, MessageWait.name.in_(existing - names)
                )
            )
        for name in names - existing:
            self.session.add(MessageWait(instance_id=self.instance.id, name=name))

    def _project_timers(self, waiting: list[Task]) -> None:
        """One job per waiting timer; a stopped (failed) instance's jobs are held, not due."""
        due = {str(t.id): d for t in waiting if (d := projection.timer_due(t)) is not None}
        jobs = {
            j.task_guid: j
            for j in self.session.execute(
                select(Job).where(
                    Job.instance_id == self.instance.id,
                    Job.kind == "timer",
                    Job.state.in_(("pending", "held")),
                )
            ).scalars()
        }
        for guid, job in jobs.items():
            if guid not in due:
                self.record("timer.cancelled", {"job": job.id, "due_at": job.due_at}, task_guid=guid)
                self.session.delete(job)
            elif job.due_at != due[guid]:
                self.record("timer.rescheduled", {"job": job.id, "due_at": due[guid]}, task_guid=guid)
                job.due_at = due[guid]
        state = "held" if self.instance.status == "failed" else "pending"
        for guid, at in due.items():
            if guid not in jobs:
                self.session.add(
                    Job(instance_id=self.instance.id, kind="timer", task_guid=guid, due_at=at, state=state)
                )
                self.record("timer.scheduled", {"due_at": at}, task_guid=guid)

    def _summarise(self) -> None:
        inst = self.instance
        before = facts.facts_of(inst.process_key, inst.data, inst.status)
        data = projection.instance_data(self.workflow)
        inst.data = audit.normalize(data)
        if isinstance(data.get("title"), str):
            inst.title = data["title"][:300]
        stage = self._current_stage()
        if stage:
            inst.stage = stage
        if self.workflow.completed and inst.status == "running":
            inst.status = "completed"
            inst.ended_at = self.now
            self.record("instance.completed", {"data": data})
        facts.refresh(self.session, inst, before)

    def _current_stage(self) -> str | None:
        for task in projection.ready_human_tasks(self.workflow) + projection.waiting_event_tasks(
            self.workflow
        ):
            stage = projection.stage_of(task)
            if stage:
                return stage
        return None


def incident_kind(err: WorkflowException, refusal: Exception | None) -> str:
    if refusal is not None:
        return "script_timeout" if isinstance(refusal, ScriptTimeout) else "script_refused"
    return "data" if isinstance(err, WorkflowDataException) else "script"
