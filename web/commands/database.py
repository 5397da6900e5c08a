"""``qizhi db upgrade`` and ``qizhi audit …``: the schema, and the proof that history is intact.

``audit verify`` walks the whole chain in keyset pages (constant memory) and exits 1 naming the
first bad seq; ``--against`` also proves that history up to a head exported earlier is unchanged.
``audit checkpoint`` records a verified head; ``audit export-head`` prints the latest as JSON for
the auditor to keep outside the system; ``audit export`` writes CSV or JSON lines, and is audited.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup

from engine import audit as engine_audit
from engine import audit_export, audit_query, directory
from engine.audit_query import AuditFilter
from engine.models import AuditCheckpoint
from web.audit_ui import parse_moment
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


def _anchor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> engine_audit.Anchor | None:
    if value is None:
        return None
    try:
        return engine_audit.Anchor.parse(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


@audit.command("verify")
@click.option(
    "--against",
    callback=_anchor,
    metavar="JSON",
    help='A head exported earlier, e.g. \'{"seq": 120, "hash": "…"}\' (what export-head prints).',
)
@click.option(
    "--checkpoint", "checkpoint_", callback=_anchor, metavar="SEQ:HASH", help="The same as SEQ:HASH."
)
def verify(against: engine_audit.Anchor | None, checkpoint_: engine_audit.Anchor | None) -> None:
    """Recompute the chain; exit 1 and name the first bad event if anything was altered."""
    if against and checkpoint_ and against != checkpoint_:
        raise click.UsageError("give --against or --checkpoint, not two different heads")
    with current_engine().db.read() as s:
        verdict = engine_audit.verify(s, against=against or checkpoint_)
    if not verdict.ok:
        click.echo(str(verdict), err=True)
        raise click.exceptions.Exit(1)
    click.echo(str(verdict))


def _head_json(row: AuditCheckpoint) -> str:
    return json.dumps(
        {"seq": row.seq, "hash": row.hash, "at": row.at.isoformat(), "created_by": row.created_by},
        ensure_ascii=False,
    )


@audit.command("checkpoint")
@click.option("--as", "actor", default=engine_audit.SYSTEM, show_default=True, metavar="USERNAME")
def checkpoint(actor: str) -> None:
    """Verify the chain since the last checkpoint and record its head as a new one (exit 1 if broken)."""
    engine = current_engine()
    with engine.db.write() as s:
        if actor != engine_audit.SYSTEM:
            directory.user_by_name(s, actor)
        row = engine_audit.checkpoint(s, actor)
    click.echo(f"checkpoint recorded at seq {row.seq}; keep this head outside the system:")
    click.echo(_head_json(row))


@audit.command("export-head")
def export_head() -> None:
    """Print the latest checkpoint as JSON: {"seq", "hash", "at", "created_by"}."""
    with current_engine().db.read() as s:
        row = engine_audit.latest_checkpoint(s)
    if row is None:
        raise click.ClickException("no checkpoint yet; run `qizhi audit checkpoint` first")
    click.echo(_head_json(row))


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(sorted(audit_export.FORMATS)), required=True)
@click.option("--out", required=True, metavar="FILE", help="Where to write; - for standard output.")
@click.option("--as", "reader", default="admin", show_default=True, metavar="USERNAME", help="Who exports.")
@click.option("--since", metavar="TIME", help="Beijing time, 2025-06-30 or 2025-06-30T14:30.")
@click.option("--until", metavar="TIME", help="Beijing time; a date includes the whole day.")
@click.option("--actor", metavar="USERNAME", help="Only events by this user.")
@click.option("--action", metavar="ACTION", help="Only this action, e.g. task.completed.")
@click.option("--org", "org_code", metavar="CODE", help="Only this organisation and those below it.")
@click.option("--process", metavar="KEY", help="Only this process.")
@click.option("--instance", type=click.IntRange(min=1), metavar="ID", help="Only this instance.")
def export(fmt: str, out: str, reader: str, org_code: str | None, **filters: Any) -> None:
    """Write the (filtered) trail as CSV (UTF-8 with BOM, for Excel) or JSON lines; the export is audited."""
    engine = current_engine()
    with engine.db.write() as s:
        user = directory.user_by_name(s, reader)
        scope = audit_query.scope_for(s, user.id)
        found = _filter(s, scope, org_code, filters)
        upto = audit_export.record(s, user.username, fmt, found, scope)
    counted: list[int] = []
    chunks = audit_export.stream(engine.db, fmt, found, scope, upto, progress=counted.append)
    if out == "-":
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
    else:
        _write_whole(Path(out), chunks)
    where = "standard output" if out == "-" else out
    click.echo(f"exported {sum(counted)} events (up to seq {upto}) as {fmt} to {where}", err=True)


def _filter(s: Any, scope: audit_query.Scope, org_code: str | None, given: dict[str, Any]) -> AuditFilter:
    moments = {}
    for key in ("since", "until"):
        if given[key]:
            try:
                moments[key] = parse_moment(given[key], end=key == "until")
            except ValueError as err:
                raise click.BadParameter("use 2025-06-30 or 2025-06-30T14:30", param_hint=f"--{key}") from err
    org_id = None
    if org_code:
        org_id = directory.org_by_code(s, org_code).id
        if not scope.allows(org_id):
            raise click.ClickException(f"{org_code} is outside what this reader may audit")
    return AuditFilter(
        since=moments.get("since"),
        until=moments.get("until"),
        actor=given["actor"],
        action=given["action"],
        org_id=org_id,
        process=given["process"],
        instance_id=given["instance"],
    )


def _write_whole(path: Path, chunks: Any) -> None:
    """Write beside the target and rename at the end, so a failed export leaves no half file behind."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
