"""Authorisation helpers every blueprint uses, so that no page checks access its own way.

Links are hidden from people without the role, but hiding is a courtesy: every view checks again
through these, and the engine checks once more when it acts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import abort
from flask_login import current_user, login_required

from engine.directory import holds_role_above, holds_role_anywhere, sees_org
from engine.models import User
from web.extension import current_engine

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["login_required", "require_role", "require_role_above", "require_sees_org", "signed_in_user"]


def require_role(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The view needs a signed-in user holding one of ``roles`` in some organisation; else 403."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        @login_required
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            with current_engine().db.read() as s:
                if not holds_role_anywhere(s, current_user.id, roles):
                    abort(403)
            return view(*args, **kwargs)

        return checked

    return decorate


def require_role_above(org_id: int, *roles: str) -> None:
    """403 unless the current user holds one of ``roles`` in ``org_id`` or an organisation above it."""
    with current_engine().db.read() as s:
        if not holds_role_above(s, current_user.id, org_id, roles):
            abort(403)


def require_sees_org(org_id: int) -> None:
    """404 unless the current user holds a role in ``org_id`` or above: others must not learn it exists."""
    with current_engine().db.read() as s:
        if not sees_org(s, current_user.id, org_id):
            abort(404)


def signed_in_user(s) -> User:  # type: ignore[no-untyped-def]
    """The current user's row in session ``s`` (views that pass a ``User`` to the engine's read models)."""
    user = s.get(User, current_user.id)
    if user is None:
        abort(403)
    return user
