"""``qizhi figures rebuild``: recompute the dashboards' figure facts from the instances.

The unit of work keeps the facts in step, so this is for after a restore or a hand edit of the
database; it prints and audits how many rows it found out of step.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from web.commands.directory import ACTOR
from web.extension import current_engine


@click.group("figures", cls=AppGroup)
def figures() -> None:
    """The yearly figures behind the dashboards."""


@figures.command("rebuild")
def rebuild() -> None:
    """Recompute every instance's figure facts (audited as figures.rebuilt)."""
    done = current_engine().rebuild_facts(ACTOR)
    click.echo(f"figure facts rebuilt: {done.facts} facts; {done.added} added, {done.removed} removed")
