"""Fire due timers inside the web process, for the embedded (one process, SQLite) setup.

SpiffWorkflow has no scheduler; the engine records due timers as job rows and fires them in
``run_due_jobs``. Until the separate ``qizhi worker`` exists, ``qizhi serve`` runs this thread so
timers fire without a second command. Job leases make it safe next to other workers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from engine import Engine


class DueJobTicker:
    """Calls ``engine.run_due_jobs()`` every ``interval`` seconds until stopped; failures are logged."""

    def __init__(self, engine: Engine, interval: float = 2.0, logger: logging.Logger | None = None) -> None:
        self.engine = engine
        self.interval = interval
        self.logger = logger or logging.getLogger(__name__)
        self.worker = f"serve:{socket.gethostname()}:{os.getpid()}"[:100]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qizhi-due-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.engine.run_due_jobs(worker=self.worker)
            except Exception:  # a bad moment of the database must not end timer firing for good
                self.logger.exception("firing due jobs failed; trying again in %.0f s", self.interval)
