"""How much the REST API serves under gunicorn on PostgreSQL: inbox reads and task completions.

Run from the repository root::

    .venv/bin/python -m bench.http                      # PostgreSQL database qizhi_api, 4 workers
    .venv/bin/python -m bench.http --postgres URL --workers 4 --threads 4 --clients 8 --seconds 15

**It DROPS SCHEMA public CASCADE in the database it is given** (default:
``postgresql+psycopg://postgres@127.0.0.1:5432/qizhi_api``), migrates it, loads the demo
organisation and processes (``web.demo.load_demo``: 7 organisations, ~40 people, lifecycle and
pledge instances), then deploys ``tests/fixtures/loop.bpmn`` (one form task in an endless loop)
and starts 40 loop instances for each of 8 branch members: 320 open tasks assigned to the people
the load generator acts as, on top of the demo's own. Each of those people gets an API token.

It then starts gunicorn (``--workers`` processes, gthread with ``--threads`` each, so HTTP
keep-alive works) on ``127.0.0.1:--port`` and drives it from ``--clients`` threads in this
process, each a keep-alive ``http.client`` connection acting as one of the 8 people:

``http_inbox_gets_per_s`` / ``http_inbox_get_p50_ms`` / ``http_inbox_get_p95_ms``
    ``GET /api/v1/tasks?limit=50`` for ``--seconds``: bearer-token check, the inbox query,
    JSON of 40+ tasks.
``http_completions_per_s`` / ``http_completion_p50_ms`` / ``http_completion_p95_ms``
    ``POST /api/v1/tasks/{id}/complete`` with valid form data for ``--seconds``, each client on
    its own person's tasks (so no two clients race for one instance); the answer names the next
    open task of the instance, which that client completes later. A whole unit of work per call:
    load and lock, validate, run, project, audit, serialize, commit, then the instance detail.
``http_inbox_gets_errors`` / ``http_completions_errors``
    Answers other than 200 and failed connections (should be 0; the commonest are printed).

Nothing is asserted: the figures are printed as ``name=value`` lines for people to compare.
The load generator shares the machine with the server; on a 2-core box both compete.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from engine import Database, Engine, tokens
from web.demo import DESIGNER, load_demo

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/qizhi_api"
PEOPLE = [
    ("yangfan", "DEMO-JG"),
    ("huangli", "DEMO-JG"),
    ("zhaolei", "DEMO-JG"),
    ("qianjin", "DEMO-JG"),
    ("zhuting", "DEMO-YX"),
    ("hujie", "DEMO-YX"),
    ("guoqing", "DEMO-YX"),
    ("linna", "DEMO-YX"),
]
INSTANCES_EACH = 40


def emit(name: str, value: float | int) -> None:
    print(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}", flush=True)


def note(message: str) -> None:
    print(f"# {message}", flush=True)


def percentile_ms(seconds: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile, so the figure is a latency that was actually observed."""
    ordered = sorted(seconds)
    rank = max(1, round(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1] * 1000.0


def serve_app():  # type: ignore[no-untyped-def]
    """gunicorn's app factory: the product's app, with the API until create_app registers it itself."""
    from web import create_app

    app = create_app()
    if "api" not in app.blueprints:
        import web.api

        app.register_blueprint(web.api.bp)
    return app


# --- data ------------------------------------------------------------------------------------------


def prepare(url: str) -> dict[str, str]:
    """Reset and fill the database; return a token per person the clients act as."""
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    db.upgrade()
    engine = Engine(db)
    report = load_demo(engine)
    note(f"demo loaded: {'; '.join(report.lines())}")
    engine.deploy([FIXTURES / "loop.bpmn", FIXTURES / "report.json"], DESIGNER)
    for username, org in PEOPLE:
        for i in range(INSTANCES_EACH):
            engine.start("loop", username, org, {"reports": 0, "title": f"{username} 月报 {i + 1}"})
    found: dict[str, str] = {}
    with db.write() as s:
        for username, _org in PEOPLE:
            found[username] = tokens.create(s, username, "bench")[1]
        open_tasks = s.execute(text("SELECT count(*) FROM human_task WHERE state = 'open'")).scalar_one()
    mine = len(PEOPLE) * INSTANCES_EACH
    note(f"{open_tasks} open tasks, {mine} of them for the {len(PEOPLE)} people the clients act as")
    db.dispose()
    return found


# --- server ----------------------------------------------------------------------------------------


def start_server(url: str, port: int, workers: int, threads: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QIZHI_DATABASE_URL": url,
        "QIZHI_SECRET_KEY": secrets.token_hex(16),
        "QIZHI_DEMO": "0",
    }
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--keep-alive",
        "30",  # the default 2 s closes a connection whose client thread waited on a busy 2-core box
        "--log-level",
        "warning",
        "bench.http:serve_app()",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise SystemExit("gunicorn did not answer /healthz within 60 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


# --- load ------------------------------------------------------------------------------------------


@dataclass
class Client:
    """One keep-alive connection acting as one person."""

    port: int
    token: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    todo: deque[int] = field(default_factory=deque)
    sent: int = 0

    def __post_init__(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        began = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as err:
                self.conn.close()  # reconnects on the next request
                # a keep-alive connection the server closed meanwhile: a GET may be sent again
                if attempt == 2 or method != "GET" or not isinstance(err, http.client.RemoteDisconnected):
                    self.errors[type(err).__name__] += 1
                    return 0, None
        self.latencies.append(time.perf_counter() - began)
        if response.status != 200:
            self.errors[f"{response.status} {data[:120].decode(errors='replace')}"] += 1
        return response.status, json.loads(data) if data else None

    def read_inbox(self) -> None:
        self.call("GET", "/api/v1/tasks?limit=50")

    def complete_next(self) -> None:
        if not self.todo:  # only after errors: do not spin
            time.sleep(0.05)
            return
        task_id = self.todo.popleft()
        self.sent += 1
        status, body = self.call(
            "POST",
            f"/api/v1/tasks/{task_id}/complete",
            {"data": {"progress": f"第{self.sent}次进度报告", "done": False}},
        )
        if status == 200:
            self.todo.extend(t["id"] for t in body["open_tasks"])


def run_phase(clients: list[Client], seconds: float, step: str) -> tuple[int, float]:
    """Every client repeats ``step`` until the time is up; return requests done and elapsed seconds."""
    for client in clients:
        client.latencies.clear()
        client.errors.clear()
    stop = threading.Event()

    def loop(client: Client) -> None:
        action = getattr(client, step)
        while not stop.is_set():
            action()

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(len(c.latencies) for c in clients), time.perf_counter() - began


def report(name: str, clients: list[Client], count: int, elapsed: float) -> None:
    latencies = [x for c in clients for x in c.latencies]
    emit(f"http_{name}_per_s", count / elapsed)
    if latencies:
        singular = name.removesuffix("s")
        emit(f"http_{singular}_p50_ms", statistics.median(latencies) * 1000.0)
        emit(f"http_{singular}_p95_ms", percentile_ms(latencies, 95))
    errors: Counter[str] = sum((c.errors for c in clients), Counter())
    emit(f"http_{name}_errors", sum(errors.values()))
    for what, count in errors.most_common(5):
        note(f"  {count} x {what}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_URL, metavar="URL", help="database to RESET and use")
    parser.add_argument("--port", type=int, default=5107)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--clients", type=int, default=8, help="load generator connections")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured phase")
    args = parser.parse_args(argv)
    if not args.postgres.startswith("postgresql"):
        parser.error("--postgres needs a postgresql+psycopg:// URL")

    note(f"resetting {args.postgres} (DROP SCHEMA public CASCADE) and loading data")
    people_tokens = prepare(args.postgres)
    note(
        f"gunicorn: {args.workers} workers x {args.threads} threads (gthread) on 127.0.0.1:{args.port}; "
        f"{args.clients} keep-alive clients; {args.seconds:g} s per phase; {os.cpu_count()} CPUs"
    )
    server = start_server(args.postgres, args.port, args.workers, args.threads)
    try:
        names = [username for username, _ in PEOPLE]
        clients = [Client(args.port, people_tokens[names[i % len(names)]]) for i in range(args.clients)]
        for client in clients:  # warm every worker's caches and connection pools
            for _ in range(3):
                client.read_inbox()
        count, elapsed = run_phase(clients, args.seconds, "read_inbox")
        report("inbox_gets", clients, count, elapsed)

        # Completions: each person's tasks go to one client only, so clients never race.
        by_person: dict[str, Client] = {}
        for i, client in enumerate(clients[: len(names)]):
            by_person[names[i]] = client
            status, body = client.call("GET", "/api/v1/tasks?limit=200")
            if status != 200:
                raise SystemExit(f"could not read the inbox: {status} {body}")
            client.todo.extend(t["id"] for t in body["items"] if t["process"] == "loop")
        workers = list(by_person.values())
        count, elapsed = run_phase(workers, args.seconds, "complete_next")
        report("completions", workers, count, elapsed)
    finally:
        stop_server(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
