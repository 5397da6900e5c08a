"""Qizhi's BPM core on SpiffWorkflow: durable, audited, sandboxed. No Flask, no HTTP, no request state."""

from engine.db import Database
from engine.errors import (
    BundleInvalid,
    Conflict,
    EngineError,
    Forbidden,
    InvalidState,
    NotFound,
    Problem,
    ValidationFailed,
)
from engine.runtime import Engine

__all__ = [
    "BundleInvalid",
    "Conflict",
    "Database",
    "Engine",
    "EngineError",
    "Forbidden",
    "InvalidState",
    "NotFound",
    "Problem",
    "ValidationFailed",
]
