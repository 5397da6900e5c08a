"""The engine's commands: deploy, start, complete, claim, deliver messages, fire due jobs.

Each command that changes an instance goes through ``Engine._unit`` (see engine.work); commands
that change only one row (claim, unclaim) do a guarded update and audit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.exceptions import WorkflowException
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine import audit, directory, forms, projection, queries, reports
from engine.bundle import Bundle, Compiled, SpecCache, compile_bundle
from engine.db import Database
from engine.errors import Conflict, Forbidden, InvalidState, NotFound, ScriptFailed
from engine.live import LiveWorkflows
from engine.models import (
    Definition,
    HumanTask,
    Incident,
    Instance,
    Job,
    MessageWait,
    Organisation,
    User,
    utcnow,
)
from engine.sandbox import make_script_engine, script_clock
from engine.state import StateSerializer
from engine.work import SYSTEM, UnitOfWork

MAX_JOB_ATTEMPTS = 5


@dataclass(frozen=True)
class Lease:
    """A claimed job, with what running it needs, so it is not read again before its unit of work."""

    id: int
    kind: str
    instance_id: int
    task_guid: str | None


LEASE = timedelta(minutes=5)


class Engine:
    """Durable BPMN execution on SpiffWorkflow and SQLAlchemy. Knows nothing of Flask or HTTP."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = utcnow,
        script_time_budget: float = 2.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.specs = SpecCache()
        self.serializer = StateSerializer()
        self.script_engine = make_script_engine(script_time_budget)
        self.live = LiveWorkflows()

    # --- definitions -------------------------------------------------------------------------------

    def deploy(
        self,
        files: Mapping[str, bytes | str] | Iterable[str | Path],
        actor: str,
        process_key: str | None = None,
    ) -> Definition:
        """Check and store a bundle. Same content again is the same version; nothing is stored on error."""
        bundle = Bundle.from_files(files)
        compiled = compile_bundle(bundle, process_key)
        digest = bundle.content_hash
        try:
            with self.db.write() as s:
                user = directory.user_by_name(s, actor)
                if not directory.holds_role_anywhere(s, user.id, DEPLOY_ROLES):
                    raise Forbidden(f"{actor} may not deploy processes: that needs the designer role")
                found = s.execute(
                    select(Definition).where(
                        Definition.process_key == compiled.process_key, Definition.content_hash == digest
                    )
                ).scalar_one_or_none()
                if found is not None:
                    return found
                latest = s.execute(
                    select(func.max(Definition.version)).where(Definition.process_key == compiled.process_key)
                ).scalar()
                definition = Definition(
                    process_key=compiled.process_key,
                    name=compiled.name,
                    version=(latest or 0) + 1,
                    content_hash=digest,
                    sources=dict(bundle.files),
                    deployed_by=user.username,
                    deployed_at=self.clock(),
                )
                s.add(definition)
                s.flush()
                audit.append(
                    s,
                    [
                        audit.PendingEvent(
                            actor=user.username,
                            action="definition.deployed",
                            definition_id=definition.id,
                            payload={
                                "process": definition.process_key,
                                "version": definition.version,
                                "content_hash": digest,
                                "files": sorted(bundle.files),
                            },
                        )
                    ],
                    self.clock(),
                )
        except IntegrityError as err:
            raise Conflict("the same definition is being deployed by someone else; try again") from err
        self.specs.put(definition.content_hash, definition.process_key, compiled)
        return definition

    def definition(self, s: Session, process_key: str, version: int | None = None) -> Definition:
        query = select(Definition).where(Definition.process_key == process_key)
        query = (
            query.where(Definition.version == version)
            if version
            else query.order_by(Definition.version.desc())
        )
        found = s.execute(query.limit(1)).scalar_one_or_none()
        if found is None:
            raise NotFound(f"no deployed process '{process_key}'")
        return found

    def compiled(self, definition: Definition) -> Compiled:
        return self.specs.get(definition.content_hash, lambda: definition.sources, definition.process_key)

    # --- instances ---------------------------------------------------------------------------------

    def start(
        self,
        process_key: str,
        actor: str,
        org: str | int,
        data: Mapping[str, Any] | None = None,
        business_key: str | None = None,
        version: int | None = None,
    ) -> Instance:
        """Start the newest (or the given) version of a process for an organisation."""
        now = self.clock()
        with script_clock(now), self.db.write() as s:
            user = directory.user_by_name(s, actor)
            organisation = _org(s, org)
            if not directory.sees_org(s, user.id, organisation.id):
                raise Forbidden(
                    f"{actor} holds no role in {organisation.name} or above it, so may not start work there"
                )
            definition = self.definition(s, process_key, version)
            compiled = self.compiled(definition)
            workflow = BpmnWorkflow(
                compiled.specs[compiled.process_key],
                compiled.subprocess_specs(),
                script_engine=self.script_engine,
            )
            start_data = audit.normalize(dict(data or {}))
            for task in workflow.get_tasks(state=TaskState.READY):
                task.data.update(start_data)
            instance = Instance(
                definition_id=definition.id,
                process_key=definition.process_key,
                business_key=business_key,
                org_id=organisation.id,
                started_by_id=user.id,
                state=b"",
                data=start_data,
                started_at=now,
                updated_at=now,
                title=_title(start_data, definition),
            )
            s.add(instance)
            s.flush()
            work = UnitOfWork(s, instance, workflow, compiled, user.username, now)
            work.record(
                "instance.started",
                {
                    "process": definition.process_key,
                    "version": definition.version,
                    "org": organisation.code,
                    "business_key": business_key,
                    "data": start_data,
                },
            )
            work.run_engine()
            work.finish(self.serializer.dumps)
        return instance

    def start_once(
        self,
        process_key: str,
        actor: str,
        org: str | int,
        business_key: str,
        data: Mapping[str, Any] | None = None,
    ) -> tuple[Instance, bool]:
        """Start unless an instance of this process already has the business key; say which happened."""
        existing = self._by_business_key(process_key, business_key)
        if existing is not None:
            return existing, False
        try:
            return self.start(process_key, actor, org, data, business_key=business_key), True
        except IntegrityError:  # started by someone else at the same moment: the constraint decided
            found = self._by_business_key(process_key, business_key)
            if found is None:
                raise
            return found, False

    def start_for_members(
        self,
        process_key: str,
        actor: str,
        org: str,
        key_prefix: str,
        data: Mapping[str, Any] | None = None,
        role: str = "party_member",
        data_for: Callable[[str, str, list[str]], Mapping[str, Any]] | None = None,
    ) -> list[tuple[str, Instance, bool]]:
        """One instance per holder of ``role`` in the organisation (e.g. a branch's yearly pledge cycle).

        Idempotent: the business key is ``<key_prefix>:<username>``, so running it again starts only
        for members added since. ``data_for(username, display_name, all usernames)`` adds a member's
        own data (their post, their peers). Each start is its own unit of work.
        """
        with self.db.read() as s:
            members = directory.holders(s, org, role)
        everyone = [username for username, _ in members]
        results = []
        for username, display_name in members:
            member_data = {**dict(data or {}), "member": username, "member_name": display_name}
            if data_for is not None:
                member_data.update(data_for(username, display_name, everyone))
            instance, created = self.start_once(
                process_key, actor, org, f"{key_prefix}:{username}", member_data
            )
            results.append((username, instance, created))
        return results

    def _by_business_key(self, process_key: str, business_key: str) -> Instance | None:
        with self.db.read() as s:
            return s.execute(
                select(Instance).where(
                    Instance.process_key == process_key, Instance.business_key == business_key
                )
            ).scalar_one_or_none()

    def complete(
        self,
        task_id: int,
        actor: str,
        data: Mapping[str, Any] | None = None,
        expected_revision: int | None = None,
    ) -> Instance:
        """Complete a human task with form data, validated against its form on the server."""
        with self._unit_for_task(task_id, actor, expected_revision) as (work, row, user):
            schema = work.compiled.forms.get(row.form) if row.form else None
            clean = forms.validate(schema, dict(data or {}))
            task = _live_task(work.workflow, row)
            before = projection.instance_data(work.workflow)
            task.data.update(clean)
            try:
                task.run()
            except WorkflowException as err:  # the step itself failed: refuse the submission, keep nothing
                raise ScriptFailed(f"the process could not accept this submission: {err}") from err
            work.run_engine()
            work.close_task(row, "completed", by=user.id)
            if row.assignee_id is None:
                row.assignee_id, row.assignment = user.id, "claim"
            after = projection.instance_data(work.workflow)
            work.record(
                "task.completed",
                {
                    "task": row.id,
                    "title": row.title,
                    "form": row.form,
                    "data": clean,
                    "diff": projection.diff(before, after),
                },
                task_guid=row.task_guid,
            )
        return work.instance

    def claim(self, task_id: int, actor: str) -> HumanTask:
        return self._assign(task_id, actor, claim=True)

    def unclaim(self, task_id: int, actor: str) -> HumanTask:
        return self._assign(task_id, actor, claim=False)

    def _assign(self, task_id: int, actor: str, claim: bool) -> HumanTask:
        now = self.clock()
        with self.db.write() as s:
            user = directory.user_by_name(s, actor)
            row = _task_row(s, task_id)
            if row.state != "open":
                raise InvalidState(f"task {task_id} is already {row.state}")
            if claim:
                if row.assignee_id == user.id:
                    return row
                if row.candidate_key not in directory.user_keys(s, user.id):
                    raise Forbidden(f"{actor} may not claim task {task_id}")
                guard = (HumanTask.assignee_id.is_(None),)
                values = {"assignee_id": user.id, "assignment": "claim"}
            else:
                if row.assignee_id != user.id or row.assignment != "claim":
                    raise Forbidden(f"{actor} holds no claim on task {task_id}")
                guard = (HumanTask.assignee_id == user.id,)
                values = {"assignee_id": None, "assignment": None}
            done = s.execute(
                update(HumanTask)
                .where(HumanTask.id == task_id, HumanTask.state == "open", *guard)
                .values(**values)
            ).rowcount
            if done != 1:
                raise Conflict(f"task {task_id} was claimed by someone else meanwhile")
            audit.append(
                s,
                [
                    audit.PendingEvent(
                        actor=user.username,
                        action="task.claimed" if claim else "task.unclaimed",
                        payload={"task": row.id, "title": row.title},
                        instance_id=row.instance_id,
                        task_guid=row.task_guid,
                        org_id=row.org_id,
                    )
                ],
                now,
            )
            s.refresh(row)
        return row

    def send_message(
        self, name: str, payload: Any = None, actor: str = SYSTEM, business_key: str | None = None
    ) -> list[int]:
        """Deliver a message to every instance waiting for it (or only those with the business key)."""
        with self.db.read() as s:
            query = (
                select(MessageWait.instance_id)
                .join(Instance, Instance.id == MessageWait.instance_id)
                .where(MessageWait.name == name, Instance.status == "running")
            )
            if business_key is not None:
                query = query.where(Instance.business_key == business_key)
            targets = list(s.execute(query.order_by(MessageWait.instance_id)).scalars())
        delivered = []
        for instance_id in targets:
            with self._unit(instance_id, actor) as work:
                waiting = [
                    t
                    for t in projection.waiting_event_tasks(work.workflow)
                    if projection.message_name(t) == name
                ]
                if not waiting:
                    continue
                event = BpmnEvent(waiting[0].task_spec.event_definition, payload)
                work.run_engine(lambda event=event, work=work: work.workflow.catch(event))
                work.record("message.delivered", {"name": name, "payload": payload})
            delivered.append(instance_id)
        return delivered

    # --- read models ------------------------------------------------------------------------------

    def inbox(self, username: str, filters: queries.InboxFilter | None = None) -> list[HumanTask]:
        """Open tasks the user may act on (assigned, or unclaimed in a role or group they hold)."""
        with self.db.read() as s:
            return queries.inbox(s, directory.user_by_name(s, username).id, filters)

    def instance(self, instance_id: int, viewer: str | None = None) -> queries.InstanceView:
        """Status, stage, data, open tasks and incidents; ``viewer`` must be allowed to see it."""
        with self.db.read() as s:
            user = directory.user_by_name(s, viewer) if viewer else None
            return queries.instance_view(s, instance_id, user)

    def yearly_compliance(self, year: int) -> dict[str, reports.Compliance]:
        """Per grassroots organisation: projects run and problems solved in the year, and shortfalls."""
        with self.db.read() as s:
            return reports.yearly_compliance(s, year)

    # --- jobs --------------------------------------------------------------------------------------

    def run_due_jobs(self, now: datetime | None = None, limit: int = 100, worker: str = "inline") -> int:
        """Fire every job due by ``now`` (our clock, not SpiffWorkflow's); return how many ran."""
        now = now or self.clock()
        leases = self.claim_due_jobs(now, limit, worker)
        for lease in leases:
            self.run_job(lease, now, worker)
        return len(leases)

    def claim_due_jobs(self, now: datetime, limit: int, worker: str) -> list[Lease]:
        """Lease due jobs to a worker; SKIP LOCKED lets many workers share the table on PostgreSQL."""
        with self.db.write() as s:
            query = (
                select(Job)
                .where(
                    Job.state == "pending",
                    Job.due_at <= now,
                    (Job.lease_until.is_(None)) | (Job.lease_until < now),
                )
                .order_by(Job.due_at, Job.id)
                .limit(limit)
            )
            if self.db.postgres:
                query = query.with_for_update(skip_locked=True)
            jobs = list(s.execute(query).scalars())
            for job in jobs:
                job.lease_owner, job.lease_until = worker, now + LEASE
            return [Lease(j.id, j.kind, j.instance_id, j.task_guid) for j in jobs]

    def run_job(self, lease: Lease, now: datetime, worker: str) -> None:
        try:
            if lease.kind == "reminder":
                self._remind(lease.id, now, worker)
            else:
                self._fire(lease, now, worker)
        except (Conflict, StaleDataError):
            self._release(lease.id)
        except Exception as err:  # any other failure: retry with backoff, then an incident
            self._job_failed(lease.id, now, err)

    def _remind(self, job_id: int, now: datetime, worker: str) -> None:
        """Record that a task's people are due a reminder; no workflow state changes, so no unit of work."""
        with self.db.write() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state != "pending" or job.lease_owner != worker:
                return
            job.state, job.attempts = "done", job.attempts + 1
            row = s.execute(
                select(HumanTask).where(
                    HumanTask.instance_id == job.instance_id,
                    HumanTask.task_guid == job.task_guid,
                    HumanTask.state == "open",
                )
            ).scalar_one_or_none()
            if row is None:
                return
            assignee = s.get(User, row.assignee_id).username if row.assignee_id else None
            audit.append(
                s,
                [
                    audit.PendingEvent(
                        actor=SYSTEM,
                        action="task.reminder",
                        instance_id=row.instance_id,
                        task_guid=row.task_guid,
                        org_id=row.org_id,
                        payload={
                            "task": row.id,
                            "title": row.title,
                            "due_at": row.due_at,
                            "assignee": assignee,
                            "candidates": row.candidate_key,
                        },
                    )
                ],
                now,
            )

    def _fire(self, lease: Lease, now: datetime, worker: str) -> None:
        job_id, guid = lease.id, lease.task_guid
        with self._unit(lease.instance_id, SYSTEM, now=now) as work:
            job = work.session.get(Job, job_id)  # under the instance's lock: the authoritative check
            if job is None or job.state != "pending" or job.lease_owner != worker:
                return
            job.state = "done"
            job.attempts += 1
            task = work.workflow.get_task_from_id(UUID(guid)) if guid else None
            if task is None or task.state != TaskState.WAITING:
                work.record("timer.skipped", {"job": job_id, "reason": "timer no longer waiting"}, guid)
                return

            def fire() -> None:
                projection.mark_timer_due(task)
                work.workflow.refresh_timers()

            work.record(
                "timer.fired", {"job": job_id, "due_at": job.due_at, "element": task.task_spec.bpmn_id}, guid
            )
            work.run_engine(fire)

    def _release(self, job_id: int) -> None:
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == "pending")
                .values(lease_owner=None, lease_until=None)
            )

    def _job_failed(self, job_id: int, now: datetime, err: Exception) -> None:
        with self.db.write() as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            job.attempts += 1
            job.last_error = f"{type(err).__name__}: {err}"[:4000]
            job.lease_owner = None
            job.lease_until = now + timedelta(seconds=min(3600, 2**job.attempts))
            events = []
            if job.attempts >= MAX_JOB_ATTEMPTS:
                job.state = "failed"
                incident = Incident(
                    instance_id=job.instance_id, job_id=job.id, kind="job", message=job.last_error
                )
                s.add(incident)
                s.flush()
                events.append(
                    audit.PendingEvent(
                        actor=SYSTEM,
                        action="incident.raised",
                        instance_id=job.instance_id,
                        task_guid=job.task_guid,
                        payload={
                            "incident": incident.id,
                            "kind": "job",
                            "job": job.id,
                            "message": job.last_error,
                        },
                    )
                )
            audit.append(s, events, now)

    # --- incidents ----------------------------------------------------------------------------------

    def retry_incident(self, incident_id: int, actor: str, data: Mapping[str, Any] | None = None) -> Instance:
        """Run the failed step again (with corrected data if given); a job incident re-queues its job.

        Only the party office or an administrator above the instance's organisation may do this.
        """
        with self.db.read() as s:
            incident = s.get(Incident, incident_id)
            if incident is None or incident.instance_id is None:
                raise NotFound(f"no incident {incident_id}")
            instance_id = incident.instance_id
        with self._unit(instance_id, actor, allow_failed=True) as work:
            s = work.session
            user = directory.user_by_name(s, actor)
            if not directory.holds_role_above(s, user.id, work.instance.org_id, INCIDENT_ROLES):
                raise Forbidden(f"{actor} may not retry incidents of this organisation")
            incident = s.get(Incident, incident_id, with_for_update=True)
            if incident.state != "open":
                raise InvalidState(f"incident {incident_id} is already {incident.state}")
            incident.state, incident.resolved_at = "resolved", work.now
            work.record(
                "incident.retried", {"incident": incident_id, "kind": incident.kind, "data": dict(data or {})}
            )
            s.execute(
                update(Job)
                .where(Job.instance_id == instance_id, Job.state.in_(("held", "failed")))
                .values(state="pending", attempts=0, lease_owner=None, lease_until=None)
            )
            if work.instance.status == "failed":
                work.instance.status = "running"
                work.run_engine(lambda: _reset_failed_steps(work.workflow, audit.normalize(dict(data or {}))))
        return work.instance

    # --- the unit of work --------------------------------------------------------------------------

    @contextmanager
    def _unit(
        self,
        instance: int | Callable[[Session], int],
        actor: str,
        now: datetime | None = None,
        expected_revision: int | None = None,
        allow_failed: bool = False,
    ) -> Iterator[UnitOfWork]:
        """Load (instance id, or a function finding it in the transaction), yield, then finish and commit."""
        now = now or self.clock()
        instance_id = instance if isinstance(instance, int) else None
        try:
            with script_clock(now), self.db.write() as s:
                if instance_id is None:
                    instance_id = instance(s)  # type: ignore[operator]
                row = self._lock_instance(s, instance_id, expected_revision, allow_failed)
                definition = s.get(Definition, row.definition_id)
                compiled = self.compiled(definition)
                workflow = self.live.take(row.id, row.revision) or self.serializer.loads(
                    row.state,
                    compiled.specs[compiled.process_key],
                    compiled.subprocess_specs(),
                    self.script_engine,
                )
                work = UnitOfWork(s, row, workflow, compiled, actor, now)
                yield work
                work.finish(self.serializer.dumps)
            self.live.put(row.id, row.revision, workflow)
        except StaleDataError as err:
            raise Conflict(
                f"instance {instance_id} was changed by someone else at the same time; reload"
            ) from err

    @staticmethod
    def _lock_instance(
        s: Session, instance_id: int, expected_revision: int | None, allow_failed: bool
    ) -> Instance:
        # Writers of one instance queue on its row (PostgreSQL; SQLite's BEGIN IMMEDIATE does the
        # same), so two people completing different tasks of it both succeed; the revision check
        # still refuses a page that was loaded before the last change.
        instance = s.get(Instance, instance_id, with_for_update=True)
        if instance is None:
            raise NotFound(f"no instance {instance_id}")
        if expected_revision is not None and instance.revision != expected_revision:
            raise Conflict(
                f"instance {instance_id} changed since you loaded it "
                f"(revision {expected_revision}, now {instance.revision}); reload and try again"
            )
        if instance.status in ("completed", "terminated"):
            raise InvalidState(f"instance {instance_id} is {instance.status}")
        if instance.status == "failed" and not allow_failed:
            raise InvalidState(
                f"instance {instance_id} is stopped by an open incident; the party office must retry it first"
            )
        return instance

    @contextmanager
    def _unit_for_task(
        self, task_id: int, actor: str, expected_revision: int | None
    ) -> Iterator[tuple[UnitOfWork, HumanTask, User]]:
        with self._unit(
            lambda s: _task_row(s, task_id).instance_id, actor, expected_revision=expected_revision
        ) as work:
            s = work.session
            row = _task_row(s, task_id)
            user = directory.user_by_name(s, actor)
            if row.state != "open":
                by = s.get(User, row.completed_by_id) if row.completed_by_id else None
                who = f" by {by.display_name}" if by else ""
                raise InvalidState(f"task '{row.title}' was already {row.state}{who}")
            if not may_act(s, row, user):
                raise Forbidden(f"{actor} may not act on task {task_id}")
            yield work, row, user


INCIDENT_ROLES = ("party_office", "admin")
DEPLOY_ROLES = ("designer", "admin")


def _reset_failed_steps(workflow: BpmnWorkflow, patch: dict[str, Any]) -> None:
    """Make failed steps runnable again; corrected data goes in after the reset, which re-inherits."""
    for task in workflow.get_tasks(state=TaskState.ERROR):
        workflow.reset_from_task_id(task.id)
        task.data.update(patch)


def may_act(s: Session, row: HumanTask, user: User) -> bool:
    if row.assignee_id is not None:
        return row.assignee_id == user.id
    return row.candidate_key is not None and row.candidate_key in directory.user_keys(s, user.id)


def _task_row(s: Session, task_id: int) -> HumanTask:
    row = s.get(HumanTask, task_id)
    if row is None:
        raise NotFound(f"no task {task_id}")
    return row


def _live_task(workflow: BpmnWorkflow, row: HumanTask):  # type: ignore[no-untyped-def]
    task = workflow.get_task_from_id(UUID(row.task_guid))
    if task is None or task.state != TaskState.READY:
        raise InvalidState(f"task '{row.title}' is no longer waiting for input")
    return task


def _org(s: Session, org: str | int) -> Organisation:
    if isinstance(org, int):
        found = s.get(Organisation, org)
        if found is None:
            raise NotFound(f"no organisation {org}")
        return found
    return directory.org_by_code(s, org)


def _title(data: Mapping[str, Any], definition: Definition) -> str:
    title = data.get("title")
    return str(title)[:300] if title else definition.name
