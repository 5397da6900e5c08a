"""The job worker as a thread of ``qizhi serve``: the embedded (one process, SQLite) setup.

``qizhi serve`` runs one worker lane beside the web server, so timers, reminders and escalations
happen without a second command. It sleeps until the next due job and is woken by the in-process
signal when a request writes an earlier one (engine.wakeup), so a due timer fires within moments;
``interval`` only bounds the sleep. Job leases make it safe next to ``qizhi worker`` processes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from engine import Engine
from engine.notify import ChannelConfigError, Channels
from engine.worker import Worker
from web.settings import ConfigError


class DueJobTicker:
    """Runs a :class:`engine.worker.Worker` in the background until stopped; failures are logged."""

    def __init__(
        self,
        engine: Engine,
        interval: float = 2.0,
        logger: logging.Logger | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        try:
            engine.channels = Channels.from_settings(settings if settings is not None else os.environ)
        except ChannelConfigError as err:  # reported by the qizhi command in one line
            raise ConfigError(str(err)) from err
        name = f"serve:{socket.gethostname()}:{os.getpid()}"
        self.worker = Worker(engine, name, poll_max=interval, logger=logger)

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the job in hand (up to ``timeout`` seconds) and give back the rest."""
        self.worker.stop()
        self.worker.join(timeout)

    @property
    def alive(self) -> bool:
        return self.worker.alive
