"""Evidence files (minutes, photos, reports) attached to task forms.

Bytes live on disk under ``QIZHI_ATTACHMENTS_DIR``, named by a random storage key and never by the
name the user gave (which is kept in the ``attachment`` row, for display and download only). A file
is accepted only when both its extension and its first bytes say it is one of the allowed kinds:
a renamed executable is refused, and so is a PDF named .docx. Each file is at most 10 MB (the
request as a whole at most ``MAX_CONTENT_LENGTH``, 20 MB). Every stored file is audited.

A file is written before its row is committed, and removed again if the commit fails, so no row
points at a missing file. Downloads go only to people who may see the instance, as an attachment
with the original name (RFC 5987, so Chinese names survive) and ``nosniff``.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import abort, current_app, send_file
from flask_babel import gettext as _
from sqlalchemy import delete, select
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from engine import audit, directory
from engine.models import Attachment, Instance
from engine.queries import can_see_instance
from web.access import login_required, signed_in_user
from web.extension import current_engine
from web.formrender import clean_filename
from web.settings import ATTACHMENTS_DIR

MAX_FILE_BYTES = 10 * 1024 * 1024
OFFICE = "application/vnd.openxmlformats-officedocument."


def _is_pdf(head: bytes) -> bool:
    return head.startswith(b"%PDF-")


def _is_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _is_jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _office(folder: str) -> Callable[[bytes], bool]:
    """An Office Open XML file is a zip with a content-types part and its application's folder.

    Only the zip's directory is read (nothing is decompressed), so a zip bomb costs nothing.
    """

    def check(data: bytes) -> bool:
        if not data.startswith(b"PK\x03\x04"):
            return False
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, ValueError, OSError):
            return False
        return "[Content_Types].xml" in names and any(n.startswith(folder) for n in names)

    return check


def _is_text(data: bytes) -> bool:
    """Plain text in UTF-8 or GB 18030 (what Chinese Windows saves), with no binary control bytes."""
    if any(b < 0x20 and b not in b"\t\n\r\f" for b in data[:65536]):
        return False
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return True
    return False


@dataclass(frozen=True)
class Kind:
    content_type: str
    sniff: Callable[[bytes], bool]


KINDS: dict[str, Kind] = {
    "pdf": Kind("application/pdf", _is_pdf),
    "png": Kind("image/png", _is_png),
    "jpg": Kind("image/jpeg", _is_jpeg),
    "jpeg": Kind("image/jpeg", _is_jpeg),
    "docx": Kind(OFFICE + "wordprocessingml.document", _office("word/")),
    "xlsx": Kind(OFFICE + "spreadsheetml.sheet", _office("xl/")),
    "pptx": Kind(OFFICE + "presentationml.presentation", _office("ppt/")),
    "txt": Kind("text/plain", _is_text),
}
ACCEPT = ",".join(f".{ext}" for ext in KINDS)  # the file input's hint; the server checks regardless


@dataclass(frozen=True)
class Checked:
    """An upload that passed every check, read into memory (at most MAX_FILE_BYTES)."""

    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class Refused(ValueError):
    """An upload that is not accepted; the message says why, in the user's language."""


def check(upload: FileStorage) -> Checked:
    """Read an upload and accept it, or raise Refused: size, extension, and what its bytes say."""
    filename = clean_filename(upload.filename or "")
    ext = filename.rpartition(".")[2].lower() if "." in filename else ""
    kind = KINDS.get(ext)
    if kind is None:
        allowed = "PDF、PNG/JPG、Word/Excel/PowerPoint (docx/xlsx/pptx)、TXT"
        raise Refused(_("%(name)s：不支持此文件类型，请上传 %(allowed)s", name=filename, allowed=allowed))
    data = upload.stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise Refused(_("%(name)s：文件超过 10 MB", name=filename))
    if not data:
        raise Refused(_("%(name)s：文件是空的", name=filename))
    if not kind.sniff(data):
        raise Refused(_("%(name)s：文件内容与扩展名不符", name=filename))
    return Checked(filename, kind.content_type, data)


def storage_root() -> Path:
    root = Path(current_app.config[ATTACHMENTS_DIR])
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def _write(root: Path, data: bytes) -> str:
    """Write bytes under a fresh random key (never an existing file: O_EXCL); return the key."""
    key = secrets.token_hex(24)
    fd = os.open(root / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return key


def store(
    instance_id: int, task_id: int | None, task_guid: str | None, username: str, files: list[Checked]
) -> list[tuple[int, str]]:
    """Keep checked files for an instance; return (attachment id, filename) in order. All or nothing."""
    if not files:
        return []
    engine = current_engine()
    root = storage_root()
    keys: list[str] = []
    try:
        for item in files:
            keys.append(_write(root, item.data))
        with engine.db.write() as s:
            user = directory.user_by_name(s, username)
            instance = s.get(Instance, instance_id)
            if instance is None:
                abort(404)
            rows = [
                Attachment(
                    instance_id=instance_id,
                    task_id=task_id,
                    uploaded_by_id=user.id,
                    filename=item.filename,
                    content_type=item.content_type,
                    size=len(item.data),
                    sha256=item.sha256,
                    storage_key=key,
                )
                for item, key in zip(files, keys, strict=True)
            ]
            s.add_all(rows)
            s.flush()
            events = [
                audit.PendingEvent(
                    actor=username,
                    action="attachment_uploaded",
                    payload={
                        "attachment": row.id,
                        "task": task_id,
                        "filename": row.filename,
                        "size": row.size,
                        "sha256": row.sha256,
                    },
                    instance_id=instance_id,
                    task_guid=task_guid,
                    org_id=instance.org_id,
                )
                for row in rows
            ]
            audit.append(s, events, engine.clock())
            return [(row.id, row.filename) for row in rows]
    except BaseException:
        for key in keys:
            (root / key).unlink(missing_ok=True)
        raise


def discard(ids: list[int], username: str, reason: str) -> None:
    """Remove files stored for a submission the process then refused, so nothing dangles. Audited."""
    if not ids:
        return
    engine = current_engine()
    with engine.db.write() as s:
        rows = list(s.execute(select(Attachment).where(Attachment.id.in_(ids))).scalars())
        events = [
            audit.PendingEvent(
                actor=username,
                action="attachment_discarded",
                payload={"attachment": row.id, "filename": row.filename, "reason": reason},
                instance_id=row.instance_id,
            )
            for row in rows
        ]
        s.execute(delete(Attachment).where(Attachment.id.in_(ids)))
        audit.append(s, events, engine.clock())
        keys = [row.storage_key for row in rows]
    root = storage_root()
    for key in keys:
        (root / key).unlink(missing_ok=True)


def belonging(instance_id: int, ids: list[int]) -> set[int]:
    """Which of ``ids`` are attachments of the instance (a form may only keep its own instance's)."""
    if not ids:
        return set()
    with current_engine().db.read() as s:
        found = s.execute(
            select(Attachment.id).where(Attachment.id.in_(ids), Attachment.instance_id == instance_id)
        ).scalars()
        return set(found)


@login_required
def download(attachment_id: int) -> Response:
    """The file, to someone who may see its instance; 404 to everyone else (not even that it exists)."""
    with current_engine().db.read() as s:
        row = s.get(Attachment, attachment_id)
        instance = s.get(Instance, row.instance_id) if row is not None else None
        if row is None or instance is None or not can_see_instance(s, signed_in_user(s), instance):
            abort(404)
        filename, content_type, key = row.filename, row.content_type, row.storage_key
    path = Path(current_app.config[ATTACHMENTS_DIR]) / key
    if not path.is_file():
        current_app.logger.error("attachment %s: file %s is missing", attachment_id, path)
        abort(404)
    response = send_file(
        path, mimetype=content_type, as_attachment=True, download_name=filename, max_age=0, etag=False
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response
