"""Password hashes (werkzeug's scrypt), kept in the web layer because the engine never imports werkzeug."""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

MIN_LENGTH = 8
# Checked against when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY = generate_password_hash("qizhi-no-such-user")


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"password must have at least {MIN_LENGTH} characters")
    return generate_password_hash(password)


def check_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the account has a password."""
    if not stored:
        check_password_hash(_DUMMY, password)
        return False
    return check_password_hash(stored, password)
