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

from engine import (
    audit,
    control,
    directory,
    facts,
    forms,
    notify,
    projection,
    queries,
    reports,
    versions,
    wakeup,
)
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
JobHandler = Callable[[Lease, datetime, str], None]
# A failed job is retried after 10 s, 20 s, 40 s, ... (at most an hour), then becomes an incident.
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(hours=1)


class Engine:
    """Durable BPMN execution on SpiffWorkflow and SQLAlchemy. Knows nothing of Flask or HTTP."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = utcnow,
        script_time_budget: float = 2.0,
        channels: notify.Channels | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.channels = channels or notify.Channels()  # e-mail/webhook for reminders; in-app only if none
        self.job_signal = wakeup.install(db)  # wakes this process's workers when a job is written
        self.job_kinds: dict[str, JobHandler] = {}  # more kinds of background work: register_job_kind
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
                data={},  # the unit of work summarises it, counting the new instance's facts as it goes
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
            caused = len(work.events)  # the completion is recorded before what its steps caused
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
            work.events.insert(caused, work.events.pop())
        return work.instance

    def claim(self, task_id: int, actor: str) -> HumanTask:
        return self._assign(task_id, actor, claim=True)

    def unclaim(self, task_id: int, actor: str) -> HumanTask:
        return self._assign(task_id, actor, claim=False)

    def delegate(self, task_id: int, actor: str, to_username: str) -> HumanTask:
        """Hand a task to another user who may act on it (its assignee or the party office decides)."""
        with self.db.write() as s:
            return control.delegate(s, task_id, actor, to_username, self.clock())

    def suspend(self, instance_id: int, actor: str, reason: str = "") -> Instance:
        """Party office or admin above the organisation: freeze a running instance (see engine.control)."""
        with self.db.write() as s:
            return control.suspend(s, instance_id, actor, reason, self.clock())

    def resume(self, instance_id: int, actor: str, reason: str = "") -> Instance:
        with self.db.write() as s:
            return control.resume(s, instance_id, actor, reason, self.clock())

    def terminate(self, instance_id: int, actor: str, reason: str = "") -> Instance:
        """Party office or admin above the organisation: end an instance, closing its tasks and jobs."""
        with self.db.write() as s:
            return control.terminate(s, instance_id, actor, reason, self.clock())

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
        self,
        name: str,
        payload: Any = None,
        actor: str = SYSTEM,
        business_key: str | None = None,
        roles: tuple[str, ...] | None = None,
    ) -> list[int]:
        """Deliver a message to every instance waiting for it (or only those with the business key).

        With ``roles``, only to instances whose organisation (or one above it) ``actor`` holds one of
        them in: how a person or another system is kept to their own part of the tree.
        """
        with self.db.read() as s:
            query = (
                select(MessageWait.instance_id, Instance.org_id)
                .join(Instance, Instance.id == MessageWait.instance_id)
                .where(MessageWait.name == name, Instance.status == "running")
            )
            if business_key is not None:
                query = query.where(Instance.business_key == business_key)
            found = s.execute(query.order_by(MessageWait.instance_id)).all()
            if roles is not None:
                user_id = directory.user_by_name(s, actor).id
                allowed: dict[int, bool] = {}
                for _, org_id in found:
                    if org_id not in allowed:
                        allowed[org_id] = directory.holds_role_above(s, user_id, org_id, roles)
                found = [row for row in found if allowed[row.org_id]]
            targets = [row.instance_id for row in found]
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
                work.record("message.delivered", {"name": name, "payload": payload})
                work.run_engine(lambda event=event, work=work: work.workflow.catch(event))
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

    def task_data(self, task_id: int) -> dict[str, Any]:
        """The data an open task starts from: what its form is prefilled with. Empty once it closed.

        It is the waiting task's own copy, not the instance summary: while five judges score, the
        summary holds whichever sheet came in last, and one judge must never see another's.
        Reads (never takes) the workflow, so it is for one task page, not for lists.
        """
        with self.db.read() as s:
            row = _task_row(s, task_id)
            instance = s.get(Instance, row.instance_id)
            if row.state != "open" or instance is None:
                return {}
            compiled = self.compiled(s.get(Definition, instance.definition_id))
            state = instance.state
        workflow = self.serializer.loads(
            state, compiled.specs[compiled.process_key], compiled.subprocess_specs(), self.script_engine
        )
        task = workflow.get_task_from_id(UUID(row.task_guid))
        return audit.normalize(dict(task.data)) if task is not None else {}

    def yearly_compliance(self, year: int) -> dict[str, reports.Compliance]:
        """Per grassroots organisation: projects run and problems solved in the year, and shortfalls."""
        with self.db.read() as s:
            return reports.yearly_compliance(s, year)

    def rebuild_facts(self, actor: str) -> facts.Rebuilt:
        """Recompute the dashboards' figure facts from every instance (``qizhi figures rebuild``)."""
        with self.db.write() as s:
            return facts.rebuild(s, actor)

    # --- jobs --------------------------------------------------------------------------------------

    def run_due_jobs(self, now: datetime | None = None, limit: int = 100, worker: str = "inline") -> int:
        """Fire every job due by ``now`` (our clock, not SpiffWorkflow's); return how many ran."""
        now = now or self.clock()
        leases = self.claim_due_jobs(now, limit, worker)
        for lease in leases:
            self.run_job(lease, now, worker)
        return len(leases)

    def claim_due_jobs(self, now: datetime, limit: int, worker: str, lease: timedelta = LEASE) -> list[Lease]:
        """Lease due jobs to a worker for ``lease``; SKIP LOCKED lets many workers share the table.

        On PostgreSQL rows another worker is claiming are skipped, not waited for; SQLite's BEGIN
        IMMEDIATE runs one claim at a time. A lease that runs out (a worker killed mid-job) makes
        the job claimable again; the job's own transaction rolled back with the dead worker.
        """
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
                job.lease_owner, job.lease_until = worker, now + lease
            return [Lease(j.id, j.kind, j.instance_id, j.task_guid) for j in jobs]

    def run_job(self, lease: Lease, now: datetime, worker: str) -> str:
        """Run one leased job; say how it went, in a few words for the worker's log.

        "done"; "released" (someone changed the instance at the same moment: it runs again soon);
        "parked" (its instance is stopped or over); or the failure, retried with backoff and after
        MAX_JOB_ATTEMPTS raised as an incident. A failure stays with its job: it never stops others.
        """
        try:
            if lease.kind == "reminder":
                self._remind(lease.id, now, worker)
            elif lease.kind == "timer":
                self._fire(lease, now, worker)
            elif notify.is_delivery(lease.kind):
                notify.deliver(self, lease, now, worker)
            elif lease.kind in self.job_kinds:
                self.job_kinds[lease.kind](lease, now, worker)
            else:
                raise ValueError(f"unknown job kind '{lease.kind}'")
        except InvalidState:
            self._park(lease.id, worker)
            return "parked"
        except (Conflict, StaleDataError):
            self._release(lease.id)
            return "released"
        except Exception as err:  # any other failure: retry with backoff, then an incident
            return self._job_failed(lease.id, now, err, worker)
        return "done"

    def register_job_kind(self, kind: str, handler: JobHandler) -> None:
        """Teach the engine another kind of background job, run by every worker of this engine.

        ``handler(lease, now, worker)`` must, in its own transaction, check that the job is still
        pending and leased to ``worker`` and mark it done together with its effect, as the built-in
        kinds do: that check is what makes a job run once even when a lease runs out mid-job.
        """
        if kind in ("timer", "reminder") or notify.is_delivery(kind):
            raise ValueError(f"'{kind}' is a built-in job kind")
        self.job_kinds[kind] = handler

    def release_leases(self, job_ids: Iterable[int], worker: str) -> None:
        """Give back leases a stopping worker holds but has not started, so others run them now."""
        ids = list(job_ids)
        if not ids:
            return
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.state == "pending", Job.lease_owner == worker)
                .values(lease_owner=None, lease_until=None)
            )

    def _remind(self, job_id: int, now: datetime, worker: str) -> None:
        """Remind ahead of the due date, then wait for it; at the due date, escalate (engine.notify).

        No workflow state changes, so no unit of work: the job row (locked) and the task row are
        the whole of it. The notification rows and the audit event commit together.
        """
        with self.db.write() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state != "pending" or job.lease_owner != worker:
                return
            if s.get(Instance, job.instance_id).status == "failed":  # nobody can act until it is retried
                job.state, job.lease_owner, job.lease_until = "held", None, None
                return
            row = s.execute(
                select(HumanTask)
                .where(
                    HumanTask.instance_id == job.instance_id,
                    HumanTask.task_guid == job.task_guid,
                    HumanTask.state == "open",
                )
                .with_for_update()
            ).scalar_one_or_none()
            if row is None or row.due_at is None:
                job.state, job.attempts = "done", job.attempts + 1
                return
            if now < row.due_at:
                notify.remind(s, row, now, self.channels)
                # the same job comes back at the due date to escalate if the task is still open
                job.due_at, job.attempts, job.lease_owner, job.lease_until = row.due_at, 0, None, None
            else:
                notify.escalate(s, row, now, self.channels)
                job.state, job.attempts = "done", job.attempts + 1

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

    def _park(self, job_id: int, worker: str) -> None:
        """A job whose instance cannot move: held while it is stopped (a retry re-queues it), else dropped."""
        with self.db.write() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state != "pending" or job.lease_owner != worker:
                return
            status = s.execute(select(Instance.status).where(Instance.id == job.instance_id)).scalar()
            job.state = "held" if status == "failed" else "cancelled"
            job.lease_owner, job.lease_until = None, None

    def _job_failed(self, job_id: int, now: datetime, err: Exception, worker: str | None = None) -> str:
        """Count a failure and back off (BACKOFF_BASE doubling, capped); the last one raises an incident.

        The back-off goes into ``lease_until`` ("not before"), not ``due_at``: the due time stays the
        job's business time (a timer's, which the next unit of work would otherwise reset).
        """
        message = f"{type(err).__name__}: {err}"[:4000]
        with self.db.write() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state != "pending" or (worker is not None and job.lease_owner != worker):
                return f"failed after its lease was lost: {message}"
            job.attempts += 1
            job.last_error = message
            job.lease_owner = None
            job.lease_until = now + min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (job.attempts - 1))
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
            if job.state == "failed":
                return f"failed {job.attempts} times, incident {incident.id} raised: {message}"
            return f"failed (attempt {job.attempts}, again after {job.lease_until.isoformat()}): {message}"

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

    # --- versions -----------------------------------------------------------------------------------

    def migrate(
        self, instance_id: int, actor: str, to_version: int, expected_revision: int | None = None
    ) -> Instance:
        """Move an instance onto another version of its process, keeping its state (engine.versions)."""
        with self._unit(instance_id, actor, expected_revision=expected_revision) as work:
            s = work.session
            user = directory.user_by_name(s, actor)
            if not directory.holds_role_anywhere(s, user.id, DEPLOY_ROLES):
                raise Forbidden(f"{actor} may not migrate instances: that needs the designer role")
            old = s.get(Definition, work.instance.definition_id)
            new = self.definition(s, work.instance.process_key, to_version)
            if new.id == old.id:
                raise InvalidState(f"instance {instance_id} is already on version {new.version}")
            target = self.compiled(new)
            reasons = versions.blockers(work.workflow, target)
            if reasons:
                raise InvalidState("; ".join(reasons))
            versions.move(work.workflow, target, self.serializer._serializer.registry)
            work.instance.definition_id, work.compiled = new.id, target
            work.record(
                "instance.migrated",
                {"process": new.process_key, "from_version": old.version, "to_version": new.version},
            )
            work.run_engine()
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
        if instance.status == "suspended":
            raise InvalidState(
                f"instance {instance_id} is suspended; nothing can change until the party office resumes it"
            )
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
