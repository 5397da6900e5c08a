"""``qizhi db upgrade`` and ``qizhi audit verify``: the schema and the proof that history is intact."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from engine import audit as engine_audit
from web.extension import current_engine


@click.group("db", cls=AppGroup)
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def upgrade() -> None:
    """Create or migrate the schema to the newest version (safe to run again)."""
    engine = current_engine()
    engine.db.upgrade()
    click.echo(f"database is up to date: {engine.db.engine.url.render_as_string(hide_password=True)}")


@click.group("audit", cls=AppGroup)
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def verify() -> None:
    """Recompute the chain; exit 1 and name the first bad event if anything was altered."""
    with current_engine().db.read() as s:
        verdict = engine_audit.verify(s)
    if not verdict.ok:
        click.echo(str(verdict), err=True)
        raise click.exceptions.Exit(1)
    click.echo(str(verdict))
