"""Uploaded rolls kept between preview and import, on the server, so the import never trusts the browser.

The preview stores the file under ``<instance>/roll-uploads/<token>.xlsx`` with a note of who
uploaded it, its name, SHA-256 and time. The confirm form carries only the random token and the
SHA-256 the preview showed; the import reads the stored file again and refuses it when it has
expired (an hour), belongs to someone else, or no longer hashes to what was previewed. Files are
removed after the import and swept when they expire.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TTL_SECONDS = 3600
FOLDER = "roll-uploads"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


@dataclass(frozen=True)
class Upload:
    token: str
    user_id: int
    filename: str
    sha256: str
    created: float  # seconds since the epoch


class UploadUnusable(Exception):
    """The stored upload cannot be imported: ``reason`` is upload_missing, _expired or _tampered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _folder(instance_path: str) -> Path:
    return Path(instance_path) / FOLDER


def _paths(instance_path: str, token: str) -> tuple[Path, Path]:
    folder = _folder(instance_path)
    return folder / f"{token}.xlsx", folder / f"{token}.json"


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def save(instance_path: str, user_id: int, filename: str, data: bytes) -> Upload:
    """Keep an upload for its preview; returns what the confirm form needs (token and SHA-256)."""
    sweep(instance_path)
    _folder(instance_path).mkdir(parents=True, exist_ok=True)
    upload = Upload(
        secrets.token_urlsafe(24), user_id, filename, hashlib.sha256(data).hexdigest(), time.time()
    )
    roll, note = _paths(instance_path, upload.token)
    _write(roll, data)
    _write(note, json.dumps(asdict(upload), ensure_ascii=False).encode("utf-8"))
    return upload


def load(instance_path: str, token: str, user_id: int, sha256: str) -> tuple[Upload, bytes]:
    """The upload and its bytes, if it is this user's, unexpired and unchanged since the preview."""
    if not _TOKEN.fullmatch(token or ""):
        raise UploadUnusable("upload_missing")
    roll, note = _paths(instance_path, token)
    try:
        upload = Upload(**json.loads(note.read_text(encoding="utf-8")))
        data = roll.read_bytes()
    except (OSError, ValueError, TypeError) as err:
        raise UploadUnusable("upload_missing") from err
    if upload.user_id != user_id or upload.token != token:
        raise UploadUnusable("upload_missing")  # another admin's upload: as if it did not exist
    if time.time() - upload.created > TTL_SECONDS:
        discard(instance_path, token)
        raise UploadUnusable("upload_expired")
    if hashlib.sha256(data).hexdigest() != upload.sha256 or sha256 != upload.sha256:
        raise UploadUnusable("upload_tampered")
    return upload, data


def discard(instance_path: str, token: str) -> None:
    if _TOKEN.fullmatch(token or ""):
        for path in _paths(instance_path, token):
            path.unlink(missing_ok=True)


def sweep(instance_path: str) -> None:
    """Remove uploads whose hour is over (previews nobody confirmed)."""
    folder = _folder(instance_path)
    if not folder.is_dir():
        return
    cutoff = time.time() - TTL_SECONDS
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
        except OSError:
            continue
