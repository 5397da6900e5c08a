"""``qizhi demo`` and ``qizhi serve``: the two commands a new user meets through ``make run``."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from werkzeug.serving import make_server

from web import settings
from web.demo import DemoReport, load_demo
from web.extension import current_engine
from web.ticker import DueJobTicker

TIMER_INTERVAL = 2.0


def _say(report: DemoReport) -> None:
    for line in report.lines():
        click.echo(line)
    for problem in report.problems:
        click.echo(f"refused: {problem}", err=True)


@click.command("demo")
@with_appcontext
def demo() -> None:
    """Upgrade the schema and load the demo organisation, people and workflows (idempotent)."""
    engine = current_engine()
    engine.db.upgrade()
    report = load_demo(engine)
    _say(report)
    if report.problems:
        raise click.exceptions.Exit(1)


def browse_url(host: str, port: int) -> str:
    """The address to open: a wildcard bind is reached through the loopback address."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=5000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option("--demo", "with_demo", is_flag=True, help="Load the demo data first (as QIZHI_DEMO=1 does).")
@with_appcontext
def serve(host: str, port: int, with_demo: bool) -> None:
    """Upgrade the schema, optionally load the demo, and serve with the development server.

    A background thread fires due timers every two seconds (the embedded setup; a separate
    worker command comes later). For production, run the app under a WSGI server.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    engine = current_engine()
    engine.db.upgrade()
    if with_demo or app.config[settings.DEMO]:
        app.config[settings.DEMO] = True
        _say(load_demo(engine))
    server = make_server(host, port, app, threaded=True)
    click.echo(f"Qizhi is running: open {browse_url(host, server.server_port)}")
    click.echo("Press Ctrl+C to stop.")
    ticker = DueJobTicker(engine, TIMER_INTERVAL, app.logger)
    ticker.start()
    _stop_on_sigterm()
    try:
        server.serve_forever()  # returns on Ctrl+C (and SIGTERM, below) and closes the socket
    finally:
        ticker.stop()


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (``kill``, container stop) like Ctrl+C, so a timer run in progress can finish."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
