"""The engine's errors: each says what went wrong in words a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class EngineError(Exception):
    """Base of every error the engine raises on purpose. ``code`` is stable for API clients."""

    code = "engine_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(EngineError):
    code = "not_found"


class Forbidden(EngineError):
    code = "forbidden"


class Conflict(EngineError):
    """Someone else changed the instance or the task first; reload and try again."""

    code = "conflict"


class InvalidState(Conflict):
    code = "invalid_state"


@dataclass(frozen=True)
class Problem:
    file: str
    element: str | None
    message: str

    def __str__(self) -> str:
        where = ":".join(p for p in (self.file, self.element or "") if p)
        return f"{where}: {self.message}" if where else self.message

    def as_dict(self) -> dict[str, str | None]:
        return {"file": self.file, "element": self.element, "message": self.message}


class BundleInvalid(EngineError):
    """A deployment was refused; ``problems`` lists every problem found, and nothing was stored."""

    code = "invalid_bundle"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"the bundle has {len(problems)} problem(s):\n{lines}", [p.as_dict() for p in problems]
        )


class ValidationFailed(EngineError):
    """Submitted data failed its form's schema; ``fields`` maps a field path to its messages."""

    code = "validation_failed"

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        summary = "; ".join(f"{k or '(form)'}: {', '.join(v)}" for k, v in fields.items())
        super().__init__(f"the form has errors: {summary}", fields)


class ScriptFailed(EngineError):
    """A script, condition or expression of the process failed; the instance holds an incident."""

    code = "script_failed"
