"""A worker process that also knows a ``probe`` job: the cheapest job that leaves a trace.

``python -m tests.probe_worker URL NAME [CONCURRENCY]`` runs :class:`engine.worker.Worker` as
``qizhi worker`` does (same lanes, leases, LISTEN/NOTIFY, SIGTERM handling), with one extra kind:
a probe marks its job done and inserts one ``probe_run`` row in the same transaction, under the
same "still pending and leased to me" check every job kind makes. Ten thousand timers through the
unit of work take minutes on a shared machine; ten thousand probes test the claiming in seconds.
"""

from __future__ import annotations

import logging
import signal
import sys
from datetime import datetime

from sqlalchemy import text, update

from engine import Database, Engine
from engine.models import Job
from engine.runtime import Lease
from engine.worker import Worker

KIND = "probe"
TABLE = "CREATE TABLE IF NOT EXISTS probe_run (job_id BIGINT NOT NULL, worker TEXT NOT NULL)"


def register_probe(engine: Engine) -> None:
    def run(lease: Lease, now: datetime, owner: str) -> None:
        with engine.db.write() as s:
            mine = s.execute(
                update(Job)
                .where(Job.id == lease.id, Job.state == "pending", Job.lease_owner == owner)
                .values(state="done", attempts=Job.attempts + 1)
            ).rowcount
            if mine:
                s.execute(
                    text("INSERT INTO probe_run (job_id, worker) VALUES (:j, :w)"),
                    {"j": lease.id, "w": owner},
                )

    engine.register_job_kind(KIND, run)


def main(url: str, name: str, concurrency: int) -> None:
    logger = logging.getLogger("qizhi.worker")  # one line per job, as qizhi worker prints them
    logger.addHandler(logging.StreamHandler())
    logger.setLevel(logging.INFO)
    engine = Engine(Database(url))
    register_probe(engine)
    worker = Worker(engine, name, concurrency=concurrency, poll_max=1.0)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
