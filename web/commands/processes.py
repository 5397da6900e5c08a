"""``qizhi deploy`` and ``qizhi start``: put a process in, start an instance of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext

from engine import BundleInvalid
from engine.models import Definition
from web.extension import current_engine

DEFAULT_ACTOR = "admin"


@click.command("deploy")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--key", "process_key", metavar="PROCESS_KEY", help="Process to deploy when the bundle has several."
)
@click.option("--actor", default=DEFAULT_ACTOR, show_default=True, metavar="USERNAME", help="Who deploys.")
@with_appcontext
def deploy(files: tuple[Path, ...], process_key: str | None, actor: str) -> None:
    """Deploy a bundle: BPMN files with their DMN and form JSON files. Same content, same version."""
    try:
        definition = current_engine().deploy(list(files), actor, process_key)
    except BundleInvalid as err:
        for problem in err.problems:
            click.echo(str(problem), err=True)
        raise click.exceptions.Exit(1) from err
    click.echo(f"deployed {definition.process_key} version {definition.version} (id {definition.id})")


def _json_object(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not valid JSON: {err.msg} at column {err.colno}") from err
    if not isinstance(data, dict):
        raise click.BadParameter('must be a JSON object, e.g. \'{"title": "…"}\'')
    return data


@click.command("start")
@click.argument("process")
@click.option("--org", "org_code", required=True, metavar="CODE", help="Organisation that owns the instance.")
@click.option("--as", "actor", required=True, metavar="USERNAME", help="Who starts it.")
@click.option("--data", callback=_json_object, metavar="JSON", help="Start data, a JSON object.")
@with_appcontext
def start(process: str, org_code: str, actor: str, data: dict[str, Any]) -> None:
    """Start the newest version of PROCESS and list the tasks it opened."""
    engine = current_engine()
    instance = engine.start(process, actor, org_code, data)
    view = engine.instance(instance.id)
    with engine.db.read() as s:
        version = s.get(Definition, instance.definition_id).version
    click.echo(f"started {process} version {version}: instance {view.id}, {view.status}")
    for task in view.open_tasks:
        lane = f" [{task.lane}]" if task.lane else ""
        click.echo(f"  open task {task.id}: {task.title}{lane}")
