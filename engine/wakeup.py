"""Waking workers early when a job becomes due sooner than they planned to look, instead of polling.

A worker sleeps until the earliest due job it knows of (bounded by its poll limit). Whenever a
transaction writes a pending job row, the earliest time it made due is announced:

- on PostgreSQL, inside the transaction as ``pg_notify('qizhi_jobs', '<ISO time>')``: PostgreSQL
  delivers it to every listening worker on every host when the transaction commits, and drops it on
  rollback, so a worker never wakes for a job that does not exist;
- on SQLite (one process: the embedded setup), after commit to this process's :class:`JobSignal`.

Workers feed what they hear into their :class:`JobSignal`; a hint later than a worker's own deadline
costs nothing, an earlier one moves the deadline. Bulk statements on ``job`` (re-queueing after an
incident, releasing a lease) carry no time: they announce ``None``, "look again".
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine as SqlEngine
from sqlalchemy import event, text
from sqlalchemy.orm import ORMExecuteState, Session

from engine.db import Database
from engine.models import Job

CHANNEL = "qizhi_jobs"
_DUE = "qizhi_job_due"  # session.info: earliest due time written in this transaction (None: unknown)
_SENT = "qizhi_job_notified"  # session.info: earliest due time already sent by pg_notify
_UNKNOWN = object()
log = logging.getLogger(__name__)


class JobSignal:
    """Due-time hints for the worker threads of one process, with a version so no hint is missed.

    A waiter remembers :attr:`version` before it reads the job table; hints announced after that
    are applied to its deadline even if they arrived while it was not waiting yet.
    """

    def __init__(self, keep: int = 256) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._recent: deque[tuple[int, datetime | None]] = deque(maxlen=keep)

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def announce(self, due: datetime | None) -> None:
        """A job is due at ``due`` (None: something changed, read the table again)."""
        with self._cond:
            self._version += 1
            self._recent.append((self._version, due))
            self._cond.notify_all()

    def interrupt(self) -> None:
        """Wake every waiter without a hint, e.g. so that it sees it was asked to stop."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, deadline: datetime, seen: int, stop: threading.Event) -> None:
        """Sleep until ``deadline``, an earlier hint announced after version ``seen``, or ``stop``."""
        with self._cond:
            while not stop.is_set():
                recheck, hint, seen = self._since(seen)
                if recheck:
                    return
                if hint is not None and hint < deadline:
                    deadline = hint
                remaining = (deadline - datetime.now(UTC)).total_seconds()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _since(self, seen: int) -> tuple[bool, datetime | None, int]:
        """(must re-read the table, earliest hint, new version) for the hints after ``seen``."""
        fresh = [(v, due) for v, due in self._recent if v > seen]
        if not fresh:
            return False, None, seen
        lost = fresh[0][0] != seen + 1  # older hints fell out of the window
        if lost or any(due is None for _, due in fresh):
            return True, None, fresh[-1][0]
        return False, min(due for _, due in fresh if due is not None), fresh[-1][0]


_SIGNALS: weakref.WeakKeyDictionary[SqlEngine, JobSignal] = weakref.WeakKeyDictionary()
_installed = threading.Lock()
_listening = False


def install(db: Database) -> JobSignal:
    """The signal of ``db``'s process, with the session hooks that announce job writes (idempotent)."""
    global _listening
    with _installed:
        if not _listening:
            event.listen(Session, "after_flush", _after_flush)
            event.listen(Session, "do_orm_execute", _on_execute)
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _forget)
            _listening = True
        signal = _SIGNALS.get(db.engine)
        if signal is None:
            signal = _SIGNALS[db.engine] = JobSignal()
        return signal


def parse_hint(payload: str) -> datetime | None:
    """A NOTIFY payload back into a due time; anything unreadable means "look again"."""
    try:
        due = datetime.fromisoformat(payload)
    except ValueError:
        return None
    return due if due.tzinfo else due.replace(tzinfo=UTC)


def _signal_of(session: Session) -> JobSignal | None:
    bind = session.bind
    return _SIGNALS.get(bind) if isinstance(bind, SqlEngine) else None


def _ready_at(job: Job) -> datetime | None:
    """When a pending, unleased job becomes claimable (a failed job backs off through lease_until)."""
    if job.state != "pending" or job.lease_owner is not None or job.due_at is None:
        return None
    if job.lease_until is not None and job.lease_until > job.due_at:
        return job.lease_until
    return job.due_at


def _after_flush(session: Session, _context: Any) -> None:
    if _signal_of(session) is None:
        return
    times = [
        at
        for obj in (*session.new, *session.dirty)
        if isinstance(obj, Job) and (at := _ready_at(obj)) is not None
    ]
    if times:
        _remember(session, min(times))


def _on_execute(state: ORMExecuteState) -> None:
    """Bulk statements that make jobs claimable say no single time: announce "look again"."""
    if not (state.is_insert or state.is_update) or _signal_of(state.session) is None:
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.class_ is Job and (state.is_insert or _frees_jobs(state)):
        _remember(state.session, None)


def _frees_jobs(state: ORMExecuteState) -> bool:
    """An UPDATE that sets jobs pending again or gives up a lease (not one marking them done or held)."""
    values = state.statement.compile().params  # SET values keep their column's name; WHERE ones get "_1"
    return values.get("state") == "pending" or ("lease_owner" in values and values["lease_owner"] is None)


def _remember(session: Session, due: datetime | None) -> None:
    known = session.info.get(_DUE, _UNKNOWN)
    if known is _UNKNOWN or (known is not None and (due is None or due < known)):
        session.info[_DUE] = due
    bind = session.bind
    if isinstance(bind, SqlEngine) and bind.dialect.name == "postgresql":
        _pg_notify(session, session.info[_DUE])


def _pg_notify(session: Session, due: datetime | None) -> None:
    """Queue a NOTIFY in the transaction, once per earlier time: delivered on commit only."""
    sent = session.info.get(_SENT, _UNKNOWN)
    if sent is not _UNKNOWN and (sent is None or (due is not None and due >= sent)):
        return
    session.info[_SENT] = due
    payload = "" if due is None else due.astimezone(UTC).isoformat()
    session.connection().execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
    )


def _after_commit(session: Session) -> None:
    due = session.info.pop(_DUE, _UNKNOWN)
    session.info.pop(_SENT, None)
    if due is _UNKNOWN:
        return
    signal = _signal_of(session)
    bind = session.bind
    if signal is not None and isinstance(bind, SqlEngine) and bind.dialect.name != "postgresql":
        signal.announce(due)  # type: ignore[arg-type]


def _forget(session: Session) -> None:
    session.info.pop(_DUE, None)
    session.info.pop(_SENT, None)


class PostgresListener:
    """LISTEN qizhi_jobs on a connection of its own and pass every hint to the process's signal.

    A lost connection is reopened; after (re)connecting it announces "look again", because hints
    sent while it was away were not heard.
    """

    def __init__(
        self, db: Database, signal: JobSignal, stop: threading.Event, logger: logging.Logger | None = None
    ):
        self.db, self.signal, self.stop = db, signal, stop
        self.logger = logger or log
        self.thread = threading.Thread(target=self._run, name="qizhi-listen", daemon=True)
        self.listening = threading.Event()

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        pause = 1.0
        while not self.stop.is_set():
            try:
                self._listen()
                pause = 1.0
            except Exception as err:  # the database restarting must not end wake-ups for good
                self.listening.clear()
                self.logger.warning("listening for new jobs failed (%s); polling until it is back", err)
                self.stop.wait(pause)
                pause = min(pause * 2, 30.0)

    def _listen(self) -> None:
        raw = self.db.engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()  # ours alone, never back into the pool
        try:
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self.signal.announce(None)
            while not self.stop.is_set():
                for note in conn.notifies(timeout=1.0):
                    self.signal.announce(parse_hint(note.payload))
        finally:
            conn.close()
