"""``qizhi org ...`` and ``qizhi user ...``: the directory from a terminal, e.g. to create the first admin.

The same audited functions as the admin pages (engine.directory), with the actor ``cli``: a change
made on the server's console is in the audit trail like any other. Passwords are never arguments
(they would land in the shell history): ``user password`` prompts twice, or reads QIZHI_NEW_PASSWORD
when a script runs it.
"""

from __future__ import annotations

import os

import click
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.directory import (
    ORG_KINDS,
    ROLES,
    create_org,
    create_user,
    deactivate_user,
    grant_role,
    join_plain_group,
    org_by_code,
    reactivate_user,
    revoke_role,
    set_password_hash,
    unlock_user,
)
from engine.errors import NotFound
from engine.models import Membership, User
from web.extension import current_engine
from web.passwords import MIN_LENGTH, hash_password

ACTOR = "cli"
PASSWORD_ENV = "QIZHI_NEW_PASSWORD"
# The usual kind under each parent when --kind is not given: a top-level committee, branches, groups.
DEFAULT_KIND = {None: "committee", "committee": "branch", "general_branch": "branch", "branch": "group"}


@click.group("org", cls=AppGroup)
def org() -> None:
    """Organisations: 公司党委 → 党总支 → 党支部 → 党小组."""


@org.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--parent", metavar="CODE", help="Code of the organisation above this one.")
@click.option(
    "--kind",
    type=click.Choice(list(ORG_KINDS)),
    help="Default: committee at the top, branch under a committee or general branch, group under a branch.",
)
def add_organisation(code: str, name: str, parent: str | None, kind: str | None) -> None:
    """Add organisation CODE called NAME."""
    with current_engine().db.write() as s:
        above = org_by_code(s, parent) if parent else None
        kind = kind or DEFAULT_KIND.get(above.kind if above else None) or "branch"
        create_org(s, ACTOR, code, name, above, kind)
    under = f" under {parent}" if parent else ""
    click.echo(f"added organisation {code} {name} ({kind}){under}")


@click.group("user", cls=AppGroup)
def user() -> None:
    """People and the roles they hold in organisations."""


def _person(s: Session, username: str) -> User:
    """Any user, active or not (an administrator may set the password of a deactivated account)."""
    person = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if person is None:
        raise NotFound(f"no user '{username}'")
    return person


def _new_password() -> str:
    """From QIZHI_NEW_PASSWORD, else typed twice without echo; checked before anything is written."""
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_LENGTH:
        raise click.ClickException(f"the password must have at least {MIN_LENGTH} characters")
    return password


@user.command("add")
@click.argument("username")
@click.option(
    "--name", "display_name", metavar="DISPLAY", help="Display name, e.g. 王建国 (default: USERNAME)."
)
@click.option("--org", "org_code", required=True, metavar="CODE", help="Organisation the role is held in.")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--group", "groups", multiple=True, metavar="NAME", help="A plain group (repeatable).")
@click.option("--email", help="Email address.")
@click.option(
    "--password", "with_password", is_flag=True, help=f"Also set a password (prompted, or ${PASSWORD_ENV})."
)
def add_person(
    username: str,
    display_name: str | None,
    org_code: str,
    role: str,
    groups: tuple[str, ...],
    email: str | None,
    with_password: bool,
) -> None:
    """Add USERNAME holding ROLE in organisation CODE."""
    hashed = hash_password(_new_password()) if with_password else None
    with current_engine().db.write() as s:
        where = org_by_code(s, org_code)
        person = create_user(s, ACTOR, username, display_name or username, email)
        grant_role(s, ACTOR, person, where, role)
        for group in dict.fromkeys(groups):
            join_plain_group(s, ACTOR, person, group)
        if hashed:
            set_password_hash(s, ACTOR, person, hashed)
    extra = f", groups {', '.join(groups)}" if groups else ""
    click.echo(f"added user {username} ({person.display_name}): {role} in {org_code}{extra}")


@user.command("password")
@click.argument("username")
def set_password(username: str) -> None:
    """Set USERNAME's password: typed twice, or taken from $QIZHI_NEW_PASSWORD."""
    with current_engine().db.read() as s:
        _person(s, username)  # before prompting: a typo in the name should not cost typing a password twice
    hashed = hash_password(_new_password())
    with current_engine().db.write() as s:
        set_password_hash(s, ACTOR, _person(s, username), hashed)
    click.echo(f"password set for {username}")


@user.command("unlock")
@click.argument("username")
def unlock(username: str) -> None:
    """Lift USERNAME's sign-in lock-out after repeated failures."""
    with current_engine().db.write() as s:
        unlock_user(s, ACTOR, _person(s, username))
    click.echo(f"{username} can sign in again")


@user.command("deactivate")
@click.argument("username")
def deactivate(username: str) -> None:
    """USERNAME can no longer sign in (history and roles stay)."""
    with current_engine().db.write() as s:
        deactivate_user(s, ACTOR, _person(s, username))
    click.echo(f"deactivated {username}")


@user.command("reactivate")
@click.argument("username")
def reactivate(username: str) -> None:
    """USERNAME may sign in again."""
    with current_engine().db.write() as s:
        reactivate_user(s, ACTOR, _person(s, username))
    click.echo(f"reactivated {username}")


@user.command("grant")
@click.argument("username")
@click.option("--org", "org_code", required=True, metavar="CODE")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
def grant(username: str, org_code: str, role: str) -> None:
    """Give an existing USERNAME ROLE in organisation CODE."""
    with current_engine().db.write() as s:
        grant_role(s, ACTOR, _person(s, username), org_by_code(s, org_code), role)
    click.echo(f"{username} is {role} in {org_code}")


@user.command("revoke")
@click.argument("username")
@click.option("--org", "org_code", required=True, metavar="CODE")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
def revoke(username: str, org_code: str, role: str) -> None:
    """Take ROLE in organisation CODE away from USERNAME."""
    with current_engine().db.write() as s:
        person, where = _person(s, username), org_by_code(s, org_code)
        membership = s.execute(
            select(Membership).where(
                Membership.user_id == person.id, Membership.org_id == where.id, Membership.role == role
            )
        ).scalar_one_or_none()
        if membership is None:
            raise NotFound(f"{username} is not {role} in {org_code}")
        revoke_role(s, ACTOR, membership)
    click.echo(f"{username} is no longer {role} in {org_code}")


__all__ = ["org", "user"]
