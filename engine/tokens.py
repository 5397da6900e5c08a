"""Bearer tokens for the REST API: created for one person, shown once, stored only as a SHA-256.

A token is ``qz_`` and 43 URL-safe characters (256 random bits), so a hash without salt is
enough: nobody can guess one, and a leaked ``api_token`` table gives away nothing that signs in.
The first 12 characters are kept in clear as ``prefix`` so a person can tell their tokens apart
in a list. Creating and revoking a token are audited like every other change.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import audit, directory
from engine.errors import InvalidState, NotFound
from engine.models import ApiToken, User, utcnow
from engine.work import SYSTEM

PREFIX = "qz_"
SHOWN = 12  # characters kept in clear: "qz_" and nine more
MAX_NAME = 100
# last_used_at is a courtesy for people cleaning up old tokens, not a log: writing it on every
# request would turn each API read into a write, so it is refreshed at most this often.
TOUCH_EVERY = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """A token as a list shows it: never the token itself, which is not stored."""

    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class Bearer:
    """Who a presented token speaks for."""

    token_id: int
    user_id: int
    username: str
    last_used_at: datetime | None


def create(
    s: Session, username: str, name: str = "", actor: str = SYSTEM, now: datetime | None = None
) -> tuple[TokenInfo, str]:
    """Make a token for an active user; return it with the secret, which is never available again."""
    user = directory.user_by_name(s, username)
    label = (name or "api").strip()[:MAX_NAME] or "api"
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=label,
        prefix=secret[:SHOWN],
        token_hash=digest(secret),
        created_at=now or utcnow(),
    )
    s.add(row)
    s.flush()
    audit.append(
        s,
        [
            audit.PendingEvent(
                actor=actor,
                action="token.created",
                payload={"token": row.id, "user": user.username, "name": label, "prefix": row.prefix},
            )
        ],
        now,
    )
    return _info(row, user.username), secret


def list_tokens(s: Session, username: str | None = None) -> list[TokenInfo]:
    """Every token (or one person's), oldest first, revoked ones included so the history is visible."""
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
    if username is not None:
        query = query.where(ApiToken.user_id == directory.user_by_name(s, username).id)
    return [_info(row, name) for row, name in s.execute(query)]


def revoke(s: Session, token_id: int, actor: str = SYSTEM, now: datetime | None = None) -> TokenInfo:
    """Stop a token from working, from the next request on. Revoking twice is an error, not a no-op,
    so an operator who mistyped the id learns it."""
    row = s.get(ApiToken, token_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no API token {token_id}")
    if row.revoked_at is not None:
        raise InvalidState(f"API token {token_id} was already revoked")
    row.revoked_at = now or utcnow()
    owner = s.get(User, row.user_id)
    username = owner.username if owner else str(row.user_id)
    audit.append(
        s,
        [
            audit.PendingEvent(
                actor=actor,
                action="token.revoked",
                payload={"token": row.id, "user": username, "name": row.name, "prefix": row.prefix},
            )
        ],
        now,
    )
    return _info(row, username)


def verify(s: Session, token: str) -> Bearer | None:
    """Whose token this is, or None if it is unknown, revoked, or its owner is no longer active."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    found = s.execute(
        select(ApiToken.id, ApiToken.revoked_at, ApiToken.last_used_at, User.id, User.username, User.active)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest(token))
    ).first()
    if found is None or found[1] is not None or not found[5]:
        return None
    return Bearer(token_id=found[0], user_id=found[3], username=found[4], last_used_at=found[2])


def needs_touch(bearer: Bearer, now: datetime) -> bool:
    return bearer.last_used_at is None or bearer.last_used_at < now - TOUCH_EVERY


def touch(s: Session, bearer: Bearer, now: datetime) -> None:
    """Record use; the guard keeps concurrent requests from writing the same minute twice."""
    s.execute(
        update(ApiToken)
        .where(
            ApiToken.id == bearer.token_id,
            (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
    )


def _info(row: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        username=username,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
