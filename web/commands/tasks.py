"""``qizhi inbox``, ``qizhi task …`` and ``qizhi instance show``: walk a process without the browser.

These exist so an operator (or a script) can move an instance along, inspect it and unstick it
from a shell, with the same rules the web pages apply: every call names the acting user with
``--as`` and goes through the engine's permission, validation and revision checks, never around
them. Output is one record per line so it can be read by people and split by scripts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from engine import ValidationFailed
from engine.models import HumanTask, Incident, User
from engine.queries import InboxFilter, InstanceView
from web.extension import current_engine

# HumanTask.assignment → the word the inbox shows. "initiator" is an owner the process chose
# (the person who started it), so to the person reading the inbox it is the same as "owner".
HOLDING = {"claim": "claimed", "owner": "owner", "initiator": "owner"}

as_user = click.option("--as", "actor", required=True, metavar="USERNAME", help="Who acts.")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_object(text: str, source: str) -> dict[str, Any]:
    """Form data is a JSON object; anything else is a usage error (exit 2), not an engine error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(
            f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", param_hint=source
        ) from err
    if not isinstance(data, dict):
        raise click.BadParameter('must be a JSON object, e.g. \'{"verdict": "approve"}\'', param_hint=source)
    return data


def _holding(task: HumanTask) -> str:
    if task.assignee_id is None:
        return "candidate"
    return HOLDING.get(task.assignment or "", task.assignment or "owner")


def _day(task: HumanTask) -> str:
    return task.due_at.strftime("%Y-%m-%d") if task.due_at else "-"


def inbox_line(task: HumanTask) -> str:
    """One inbox row; two spaces between fields because titles may contain single spaces."""
    return "  ".join(
        (
            str(task.id),
            task.process_key,
            task.stage or "-",
            task.title,
            f"due {_day(task)}",
            f"[{_holding(task)}]",
            f"instance {task.instance_id}",
        )
    )


def _usernames(ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    with current_engine().db.read() as s:
        rows = s.execute(select(User.id, User.username).where(User.id.in_(wanted)))
        return {row.id: row.username for row in rows}


def _echo_open_tasks(tasks: list[HumanTask]) -> None:
    """``  open task N: title [who]``: the lane (as ``qizhi start`` prints), else whoever holds it."""
    names = _usernames(t.assignee_id for t in tasks)
    for task in tasks:
        who = task.lane or names.get(task.assignee_id or 0)
        click.echo(f"  open task {task.id}: {task.title}" + (f" [{who}]" if who else ""))


def _incident_line(incident: Incident) -> str:
    return f"  incident {incident.id} ({incident.kind}): {_one_line(incident.message)}"


@click.command("inbox")
@as_user
@click.option("--process", metavar="KEY", help="Only tasks of this process.")
@click.option("--stage", metavar="STAGE", help="Only tasks at this stage.")
@click.option("--mine", is_flag=True, help="Only tasks claimed by or assigned to the user.")
@with_appcontext
def inbox(actor: str, process: str | None, stage: str | None, mine: bool) -> None:
    """Open tasks USERNAME may act on: claimed, owned, or offered to a role or group they hold."""
    tasks = current_engine().inbox(actor, InboxFilter(process=process, stage=stage, mine_only=mine))
    for task in tasks:
        click.echo(inbox_line(task))
    if not tasks:
        click.echo("no open tasks")


@click.group("task", cls=AppGroup)
def task() -> None:
    """Act on one task: complete, claim, unclaim."""


@task.command("complete")
@click.argument("task_id", type=int)
@as_user
@click.option("--data", metavar="JSON", help="Form data, a JSON object.")
@click.option(
    "--data-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Form data from a UTF-8 JSON file (for data too long for a command line).",
)
@click.option(
    "--revision",
    type=int,
    metavar="N",
    help="Refuse if the instance changed since revision N (as `instance show` printed it).",
)
def complete(
    task_id: int, actor: str, data: str | None, data_file: Path | None, revision: int | None
) -> None:
    """Complete TASK_ID with form data, then show where the instance went."""
    if data is not None and data_file is not None:
        raise click.UsageError("give --data or --data-file, not both")
    values: dict[str, Any] = {}
    if data is not None:
        values = _parse_object(data, "'--data'")
    elif data_file is not None:
        values = _parse_object(data_file.read_text(encoding="utf-8"), "'--data-file'")
    engine = current_engine()
    try:
        instance = engine.complete(task_id, actor, values, expected_revision=revision)
    except ValidationFailed as err:
        # One line per field, so a script (or a person) sees every problem at once, not the first.
        for field, messages in err.fields.items():
            click.echo(f"{field or '(form)'}: {_one_line('; '.join(messages))}", err=True)
        raise click.exceptions.Exit(1) from err
    view = engine.instance(instance.id)
    click.echo(f"completed task {task_id}; instance {view.id} is {view.status} at stage {view.stage or '-'}")
    _echo_open_tasks(view.open_tasks)


@task.command("claim")
@click.argument("task_id", type=int)
@as_user
def claim(task_id: int, actor: str) -> None:
    """Take TASK_ID, offered to a role or group you hold, so no one else works on it."""
    row = current_engine().claim(task_id, actor)
    click.echo(f"{actor} claimed task {row.id}: {row.title} (instance {row.instance_id})")


@task.command("unclaim")
@click.argument("task_id", type=int)
@as_user
def unclaim(task_id: int, actor: str) -> None:
    """Give TASK_ID back to everyone it was offered to."""
    row = current_engine().unclaim(task_id, actor)
    click.echo(f"{actor} released task {row.id}: {row.title} (instance {row.instance_id})")


@click.group("instance", cls=AppGroup)
def instance() -> None:
    """Running and finished instances."""


@instance.command("show")
@click.argument("instance_id", type=int)
@click.option(
    "--as", "viewer", metavar="USERNAME", help="Show it only if this user may see it (default: no check)."
)
def show(instance_id: int, viewer: str | None) -> None:
    """Status, stage, data, open tasks and incidents of INSTANCE_ID."""
    view: InstanceView = current_engine().instance(instance_id, viewer)
    click.echo(f"instance {view.id}: {view.process_key}, {view.status}")
    click.echo(f"title: {view.title or '-'}")
    click.echo(f"stage: {view.stage or '-'}")
    click.echo(f"revision: {view.revision}")
    click.echo("data:")
    # ensure_ascii=False: 党建 data must read as Chinese, not \u515a\u5efa.
    click.echo(json.dumps(view.data, ensure_ascii=False, indent=2, sort_keys=True, default=str))
    click.echo("open tasks:" if view.open_tasks else "open tasks: none")
    _echo_open_tasks(view.open_tasks)
    click.echo("incidents:" if view.incidents else "incidents: none")
    for incident in view.incidents:
        click.echo(_incident_line(incident))
