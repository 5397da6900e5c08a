"""``qizhi worker``: run due timers, reminders, escalations and notices, on any number of hosts.

One line per job goes to stderr. SIGTERM or Ctrl+C stops it cleanly: each lane finishes the job
in hand and gives back the leases of the jobs it had not started.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import timedelta
from types import FrameType

import click
from flask import current_app
from flask.cli import with_appcontext

from engine.notify import ChannelConfigError, Channels
from engine.worker import Worker, default_name
from web.extension import current_engine
from web.settings import ConfigError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def channels() -> Channels:
    """Notice channels from the app's config, falling back to the QIZHI_SMTP_*/WEBHOOK environment."""
    settings = {**os.environ, **{k: v for k, v in current_app.config.items() if k.startswith("QIZHI_")}}
    try:
        return Channels.from_settings(settings)
    except ChannelConfigError as err:
        raise ConfigError(str(err)) from err


@click.command("worker")
@click.option(
    "--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Jobs run at once."
)
@click.option(
    "--poll-max",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Longest sleep in seconds between looks at the job table (wake-ups come sooner).",
)
@click.option("--name", default=None, help="Lease owner name; default HOST:PID. Must differ per worker.")
@click.option(
    "--lease",
    default=300,
    show_default=True,
    type=click.IntRange(1, 86400),
    help="Seconds a claimed job stays reserved; a killed worker's jobs wait this long.",
)
@with_appcontext
def worker(concurrency: int, poll_max: float, name: str | None, lease: int) -> None:
    """Claim and run due jobs until SIGTERM or Ctrl+C."""
    engine = current_engine()
    engine.channels = channels()
    _log_to_stderr()
    runner = Worker(
        engine,
        name or default_name(),
        concurrency=concurrency,
        poll_max=poll_max,
        lease=timedelta(seconds=lease),
    )
    _stop_on_signals(runner)
    outbound = ", ".join(engine.channels.outbound) or "in-app only"
    click.echo(
        f"qizhi worker {runner.name}: {concurrency} lane(s) on {engine.db.engine.dialect.name}, "
        f"notices {outbound}; stop with Ctrl+C or SIGTERM",
        err=True,
    )
    runner.run()
    click.echo(f"qizhi worker {runner.name}: stopped", err=True)


def _log_to_stderr() -> None:
    logger = logging.getLogger("qizhi.worker")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _stop_on_signals(runner: Worker) -> None:
    """First SIGTERM/SIGINT: finish the jobs in hand and stop. A second one: stop now."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if runner.stopping:
            raise KeyboardInterrupt
        click.echo(
            f"qizhi worker {runner.name}: {signal.Signals(signum).name}, finishing jobs in hand", err=True
        )
        runner.stop()

    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, handle)
