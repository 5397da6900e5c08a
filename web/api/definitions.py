"""``/definitions``: list deployed processes; deploy a bundle uploaded as multipart files."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from flask import request
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from engine import BundleInvalid, Problem
from engine.bundle import Bundle
from engine.directory import holds_role_anywhere
from engine.models import Definition
from engine.runtime import DEPLOY_ROLES
from web.api import shapes
from web.api.auth import caller
from web.api.errors import bad_request, forbidden, json_body
from web.api.registry import MULTIPART, Body, Param, operation
from web.extension import current_engine

SUFFIXES = (".bpmn", ".bpmn20.xml", ".dmn", ".json")


@operation(
    "GET",
    "/definitions",
    summary="List deployed process definitions",
    tag="definitions",
    query=(Param("key", {"type": "string", "minLength": 1, "maxLength": 128}, "Only this process key."),),
    responses={200: ("Every version, by key then version", "DefinitionList")},
)
def list_definitions(args: dict[str, Any]) -> Response:
    """Every deployed version of every process (or of one key), oldest version first."""
    query = select(Definition).order_by(Definition.process_key, Definition.version)
    if args["key"]:
        query = query.where(Definition.process_key == args["key"])
    with current_engine().db.read() as s:
        rows = s.execute(query).scalars().all()
        return json_body({"items": [shapes.definition(r) for r in rows]})


@operation(
    "POST",
    "/definitions",
    summary="Deploy a bundle of BPMN, DMN and form files",
    tag="definitions",
    body=Body("DeployBundle", MULTIPART),
    responses={
        201: ("Deployed as a new version", "Deployed"),
        200: ("The same content was deployed before: that version", "Deployed"),
    },
    errors=(403, 422),
)
def deploy() -> Response:
    """Multipart form: one or more ``files`` parts (and ``key`` when the bundle holds several
    executable processes). Needs the designer or admin role. A refused bundle is 422 with every
    problem in ``details`` as ``{file, element, message}``; nothing is stored."""
    me = caller()
    engine = current_engine()
    with engine.db.read() as s:
        if not holds_role_anywhere(s, me.user_id, DEPLOY_ROLES):
            raise forbidden(_("部署流程需要流程设计或系统管理员角色。"))
    if request.mimetype != MULTIPART:
        raise bad_request(
            _("请以 multipart/form-data 上传文件（字段名 files）。"), {"": ["not multipart/form-data"]}
        )
    uploads = request.files.getlist("files")
    not_files = request.form.getlist("files")
    if not uploads and not not_files:
        raise bad_request(_("请至少上传一个文件（字段名 files）。"), {"files": ["required"]})
    key = request.form.get("key") or None
    if key is not None and (len(key) > 128 or "\x00" in key):
        raise bad_request(_("key 参数有误。"), {"key": ["at most 128 characters, no NUL"]})
    files = _read(uploads, len(not_files))
    digest = Bundle.from_files(files).content_hash
    with engine.db.read() as s:
        before = set(s.execute(select(Definition.id).where(Definition.content_hash == digest)).scalars())
    definition = engine.deploy(files, me.username, key)
    created = definition.id not in before
    body = {**shapes.definition(definition), "created": created}
    return json_body(body, 201 if created else 200)


def _read(uploads: list[FileStorage], not_files: int) -> dict[str, bytes]:
    """The uploaded files by base name; names and encodings the engine cannot take are problems too.

    ``not_files`` counts ``files`` parts sent as plain form fields (no file name): a client that
    forgot ``@`` in ``curl -F files=@approval.bpmn`` is told so rather than that nothing came.
    """
    files: dict[str, bytes] = {}
    problems: list[Problem] = []
    if not_files:
        problems.append(Problem("", None, "a 'files' part is not a file upload (curl: -F files=@name.bpmn)"))
    for upload in uploads:
        name = PurePath((upload.filename or "").replace("\\", "/")).name
        content = upload.read()
        if not name or "\x00" in name:
            problems.append(Problem(name.replace("\x00", ""), None, "a file part needs a file name"))
            continue
        if not name.lower().endswith(SUFFIXES):
            problems.append(Problem(name, None, "only .bpmn, .dmn and .json (form) files can be deployed"))
            continue
        if name in files:
            problems.append(Problem(name, None, "two files have this name"))
            continue
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(Problem(name, None, "not UTF-8 text"))
            continue
        if "\x00" in text:
            problems.append(Problem(name, None, "contains a NUL character"))
            continue
        files[name] = content
    if problems:
        raise BundleInvalid(problems)
    return files
