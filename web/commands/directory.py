"""``qizhi org add`` and ``qizhi user add``: enough directory to run processes before admin pages exist."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from sqlalchemy import select

from engine.directory import ROLES, add_org, add_user, grant, join_group
from engine.models import Organisation, User
from web.extension import current_engine

# 公司党委 → 党总支 → 党支部 → 党小组
KINDS = ("committee", "general_branch", "branch", "group")


@click.group("org", cls=AppGroup)
def org() -> None:
    """Organisations: 公司党委 → 党总支 → 党支部 → 党小组."""


@org.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--parent", metavar="CODE", help="Code of the organisation above this one.")
@click.option("--kind", type=click.Choice(KINDS), default="branch", show_default=True)
def add_organisation(code: str, name: str, parent: str | None, kind: str) -> None:
    """Add organisation CODE called NAME."""
    with current_engine().db.write() as s:
        if s.execute(select(Organisation.id).where(Organisation.code == code)).first():
            raise click.ClickException(f"organisation '{code}' already exists")
        add_org(s, code, name, parent, kind)
    under = f" under {parent}" if parent else ""
    click.echo(f"added organisation {code} {name} ({kind}){under}")


@click.group("user", cls=AppGroup)
def user() -> None:
    """People and the roles they hold in organisations."""


@user.command("add")
@click.argument("username")
@click.option("--name", "display_name", metavar="DISPLAY", help="Display name, e.g. 王建国.")
@click.option("--org", "org_code", required=True, metavar="CODE", help="Organisation the role is held in.")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--group", "groups", multiple=True, metavar="NAME", help="A plain group (repeatable).")
def add_person(
    username: str, display_name: str | None, org_code: str, role: str, groups: tuple[str, ...]
) -> None:
    """Add USERNAME holding ROLE in organisation CODE."""
    with current_engine().db.write() as s:
        if s.execute(select(User.id).where(User.username == username)).first():
            raise click.ClickException(f"user '{username}' already exists")
        person = add_user(s, username, display_name)
        grant(s, username, org_code, role)
        for group in dict.fromkeys(groups):
            join_group(s, username, group)
    extra = f", groups {', '.join(groups)}" if groups else ""
    click.echo(f"added user {username} ({person.display_name}): {role} in {org_code}{extra}")
