"""The ``qizhi`` console command, on Flask's CLI so every command runs inside the app it configures.

Engine errors are expected outcomes (an unknown user, a refused bundle), not crashes: the group
turns them into one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from typing import Any

import click
from flask.cli import FlaskGroup, routes_command, shell_command
from sqlalchemy.exc import OperationalError, ProgrammingError

from engine import EngineError
from web import create_app
from web.commands import database, directory, figures, processes, running, tasks, tokens, worker
from web.settings import ConfigError


class QizhiGroup(FlaskGroup):
    """Flask's CLI group, with engine, configuration and database errors reported in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EngineError as err:
            raise click.ClickException(_one_line(err.message)) from err
        except ConfigError as err:
            raise click.ClickException(f"configuration: {err}") from err
        except (OperationalError, ProgrammingError) as err:
            missing = any(s in str(err.orig) for s in ("no such table", "does not exist"))
            hint = " (has `qizhi db upgrade` been run?)" if missing else ""
            raise click.ClickException(f"database: {_one_line(str(err.orig))}{hint}") from err


def _one_line(text: str) -> str:
    return " ".join(text.split())


cli = QizhiGroup(
    name="qizhi",
    create_app=create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="旗帜 Qizhi: party-building BPM. Configure with QIZHI_DATABASE_URL, QIZHI_SECRET_KEY, QIZHI_DEMO.",
)
# Flask's --app and --env-file would load some other app or need python-dotenv; qizhi has one app.
cli.params = [p for p in cli.params if p.name not in ("app", "env_file")]
click.version_option(package_name="qizhi", prog_name="qizhi")(cli)
for command in (
    database.db,
    database.audit,
    directory.org,
    directory.user,
    figures.figures,
    processes.deploy,
    processes.start,
    tasks.inbox,
    tasks.task,
    tasks.instance,
    tokens.token,
    running.demo,
    running.serve,
    worker.worker,
    shell_command,
    routes_command,
):
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``qizhi`` script (declared in pyproject.toml)."""
    cli.main(prog_name="qizhi")


if __name__ == "__main__":
    main()
