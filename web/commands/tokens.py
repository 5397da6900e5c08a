"""``qizhi token create|list|revoke``: bearer tokens for the REST API, managed by an operator.

The token is printed once, on its own line, by ``create`` (so ``TOKEN=$(qizhi token create u | tail -1)``
works) and can never be shown again: only its SHA-256 is stored. ``list`` shows the first characters
so a person can tell which token is which.
"""

from __future__ import annotations

from datetime import datetime

import click
from flask.cli import AppGroup

from engine import tokens
from web.extension import current_engine

OPERATOR = "operator"  # the audit trail's actor for changes made from the shell


@click.group("token", cls=AppGroup)
def token() -> None:
    """Bearer tokens for the REST API (/api/v1)."""


@token.command("create")
@click.argument("username")
@click.option("--name", default="", metavar="NAME", help="What the token is for, e.g. 'HR sync'.")
def create(username: str, name: str) -> None:
    """Create a token acting as USERNAME and print it (shown only this once)."""
    with current_engine().db.write() as s:
        info, secret = tokens.create(s, username, name, actor=OPERATOR)
    click.echo(f"created API token {info.id} '{info.name}' for {info.username}; it is shown only once:")
    click.echo(secret)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


@token.command("list")
@click.argument("username", required=False)
def list_(username: str | None) -> None:
    """List tokens (all, or USERNAME's): id, user, prefix, name, created, last used, revoked."""
    with current_engine().db.read() as s:
        found = tokens.list_tokens(s, username)
    for info in found:
        state = f"revoked {_when(info.revoked_at)}" if info.revoked_at else "active"
        click.echo(
            "  ".join(
                (
                    str(info.id),
                    info.username,
                    f"{info.prefix}…",
                    info.name,
                    f"created {_when(info.created_at)}",
                    f"used {_when(info.last_used_at)}",
                    state,
                )
            )
        )
    if not found:
        click.echo("no API tokens")


@token.command("revoke")
@click.argument("token_id", type=int)
def revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID: requests bearing it are refused from now on."""
    with current_engine().db.write() as s:
        info = tokens.revoke(s, token_id, actor=OPERATOR)
    click.echo(f"revoked API token {info.id} '{info.name}' of {info.username}")
