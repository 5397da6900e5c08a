"""The process designer: edit BPMN in the browser, validate, deploy versions, migrate instances (/designer).

Every endpoint needs the designer (or admin) role; deploying needs the designer role itself. The
checks are the engine's: validation runs ``engine.bundle.compile_bundle`` on exactly the bundle a
deploy would store, deploy goes through ``Engine.deploy`` (which audits), migration through
``engine.versions`` and ``Engine.migrate``. The modeler page is bpmn-js plus static/js/designer.js.
Other modelers' extensions (camunda:*, ...) are reported as warnings: the engine ignores them, they do
not block a deploy. Drafts are files (instance folder, designer_drafts/<user>/<key>.bpmn): the schema
has no table for them.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from engine import EngineError
from engine.bundle import FORM_PROPERTY, SPIFF_NS, Bundle, compile_bundle
from engine.directory import ROLES
from engine.errors import BundleInvalid, Problem
from engine.models import Definition
from engine.safexml import UnsafeXML, parse_xml
from engine.versions import diff_versions, dry_run, migrate_all
from web.access import require_role
from web.designer_text import bpmn_js_labels
from web.extension import current_engine
from web.formatting import beijing_time
from web.instances import STATUS_LABELS
from web.workflows import FORMS, WORKFLOWS, _decision_files

bp = Blueprint("designer", __name__, url_prefix="/designer")

ROLES_ALLOWED = ("designer", "admin")
MODELER_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:"
)
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_XML = 2_000_000
NEW_DIAGRAM = Path(__file__).resolve().parent / "templates" / "designer" / "new.bpmn"
# Namespaces of other modelers' extensions: the engine ignores them, so the designer says so.
FOREIGN = {
    "http://camunda.org/schema/1.0/bpmn": "Camunda",
    "http://camunda.org/schema/zeebe/1.0": "Camunda 8 (Zeebe)",
    "http://activiti.org/bpmn": "Activiti",
    "http://flowable.org/bpmn": "Flowable",
}


# --- version list and diff -------------------------------------------------------------------------


@bp.get("/")
@require_role(*ROLES_ALLOWED)
def index() -> str:
    with current_engine().db.read() as s:
        rows = (
            s.execute(select(Definition).order_by(Definition.process_key, Definition.version.desc()))
            .scalars()
            .all()
        )
        processes: dict[str, list[Definition]] = {}
        for row in rows:
            processes.setdefault(row.process_key, []).append(row)
    return render_template("designer/index.html", processes=processes)


@bp.get("/diff")
@require_role(*ROLES_ALLOWED)
def diff() -> str:
    key = request.args.get("key") or ""
    old_v, new_v = request.args.get("a", type=int), request.args.get("b", type=int)
    with current_engine().db.read() as s:
        old, new = _definition(s, key, old_v), _definition(s, key, new_v)
        result = diff_versions(old.sources, new.sources)
        versions = [
            v
            for (v,) in s.execute(
                select(Definition.version).where(Definition.process_key == key).order_by(Definition.version)
            )
        ]
    return render_template("designer/diff.html", key=key, old=old, new=new, diff=result, versions=versions)


def _definition(s: Any, key: str, version: int | None, latest: bool = False) -> Definition:
    """The deployed ``version`` of ``key``; with ``latest``, no version means the newest one (the
    modeler's bookmarkable link); diff and migration always name both versions."""
    if version is None and not latest:
        abort(404)
    row = _find(s, key, version)
    if row is None:
        abort(404)
    return row


def _find(s: Any, key: str, version: int | None) -> Definition | None:
    """The deployed ``version`` of ``key``, or its newest version when ``version`` is None."""
    query = select(Definition).where(Definition.process_key == key)
    if version is not None:
        query = query.where(Definition.version == version)
    return s.execute(query.order_by(Definition.version.desc()).limit(1)).scalar_one_or_none()


# --- the modeler -----------------------------------------------------------------------------------


@bp.get("/edit")
@require_role(*ROLES_ALLOWED)
def edit() -> Response:
    """The modeler on a deployed version (?key=&version=) or, without a key, on a new diagram."""
    key = request.args.get("key") or ""
    version = request.args.get("version", type=int)
    with current_engine().db.read() as s:
        base = _definition(s, key, version, latest=True) if key else None
        sources = dict(base.sources) if base else {}
    bundle_forms = {n for n in sources if n.lower().endswith(".json")} | set(draft_forms(key))
    forms = sorted(bundle_forms | {p.name for p in FORMS.glob("*.json")})
    draft = draft_path(key)
    if request.args.get("draft") and draft.is_file():
        xml_url = url_for("designer.draft_xml", key=key)
    else:
        xml_url = url_for("designer.new_xml")
        if base:
            xml_url = url_for("designer.xml", key=key, version=base.version)
    page = render_template(
        "designer/edit.html",
        base=base,
        key=key,
        xml_url=xml_url,
        forms=forms,
        roles=ROLES,
        decisions=decision_ids(sources),
        labels=bpmn_js_labels(),
        may_deploy=current_user.has_role("designer"),
        draft_saved=beijing_time(datetime.fromtimestamp(draft.stat().st_mtime, UTC))
        if draft.is_file()
        else None,
        opened_draft=bool(request.args.get("draft")) and draft.is_file(),
    )
    response = current_app.make_response(page)
    response.headers["Content-Security-Policy"] = MODELER_CSP
    return response


@bp.get("/version.bpmn")
@require_role(*ROLES_ALLOWED)
def xml() -> Response:
    key, version = request.args.get("key") or "", request.args.get("version", type=int)
    with current_engine().db.read() as s:
        row = _definition(s, key, version)
        name = main_file(row.sources, key)
        text = row.sources[name] if name else ""
    if not name:
        abort(404)
    return Response(text, mimetype="application/xml")


@bp.get("/new.bpmn")
@require_role(*ROLES_ALLOWED)
def new_xml() -> Response:
    return Response(NEW_DIAGRAM.read_text("utf-8"), mimetype="application/xml")


def main_file(sources: dict[str, str], key: str) -> str | None:
    """The BPMN file of a bundle that defines process ``key`` (a bundle may hold called processes too)."""
    for name, text in sorted(sources.items()):
        if name.lower().endswith(".bpmn") and re.search(
            rf'<[\w:]*process\b[^>]*\bid="{re.escape(key)}"', text
        ):
            return name
    return None


# --- drafts ---------------------------------------------------------------------------------------


def draft_path(key: str) -> Path:
    """designer_drafts/<user>/<key>.bpmn under the instance folder: the schema has no drafts table."""
    user = current_user.username if USERNAME.match(current_user.username) else str(current_user.id)
    name = key if key and KEY.match(key) else "_new"
    return Path(current_app.instance_path) / "designer_drafts" / user / f"{name}.bpmn"


def draft_forms_dir(key: str) -> Path:
    """The forms the user saved in the form editor for process ``key``, beside its diagram draft."""
    return draft_path(key).with_suffix(".forms")


def draft_forms(key: str) -> dict[str, str]:
    folder = draft_forms_dir(key)
    if not key or not folder.is_dir():
        return {}
    return {p.name: p.read_text("utf-8") for p in sorted(folder.glob("*.json"))}


def bundle_sources(key: str) -> dict[str, str]:
    """The files of the newest deployed version of ``key`` (empty for a process never deployed)."""
    with current_engine().db.read() as s:
        newest = _find(s, key, None)
        return dict(newest.sources) if newest else {}


@bp.get("/draft.bpmn")
@require_role(*ROLES_ALLOWED)
def draft_xml() -> Response:
    path = draft_path(request.args.get("key") or "")
    if not path.is_file():
        abort(404)
    return Response(path.read_text("utf-8"), mimetype="application/xml")


@bp.post("/draft")
@require_role(*ROLES_ALLOWED)
def save_draft() -> tuple[Response, int] | Response:
    """Keep the user's unfinished diagram; it must be safe, well-formed XML, nothing else is checked."""
    body = request.get_json(silent=True) or {}
    text, key = body.get("xml"), str(body.get("key") or "")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_XML or (key and not KEY.match(key)):
        return jsonify(problems=[Problem("", None, _("没有收到流程图")).as_dict()]), 400
    try:
        parse_xml(text.encode("utf-8"), "draft.bpmn")
    except UnsafeXML as err:
        return jsonify(problems=[Problem("", None, str(err)).as_dict()]), 400
    path = draft_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(text, "utf-8")
    partial.replace(path)  # never a half-written draft
    return jsonify(problems=[], message=_("草稿已保存"))


# --- validate and deploy --------------------------------------------------------------------------


@bp.post("/validate")
@require_role(*ROLES_ALLOWED)
def validate() -> tuple[Response, int] | Response:
    """The problems a deploy of this diagram would be refused for (none: it would deploy)."""
    payload, error = _submitted()
    if error:
        return error
    files, key, warnings = payload
    problems = check(files, key)
    return jsonify(problems=[p.as_dict() for p in problems], warnings=warnings)


@bp.post("/deploy")
@require_role("designer")
def deploy() -> tuple[Response, int] | Response:
    payload, error = _submitted()
    if error:
        return error
    files, key, warnings = payload
    problems = check(files, key)  # the same compile deploy runs; here, so no input can make it a 500
    if problems:
        return jsonify(problems=[p.as_dict() for p in problems], warnings=warnings), 422
    engine = current_engine()
    with engine.db.read() as s:
        known = set(
            s.execute(
                select(Definition.id).where(Definition.content_hash == Bundle.from_files(files).content_hash)
            ).scalars()
        )
    try:
        definition = engine.deploy(files, current_user.username, key or None)
    except BundleInvalid as err:
        return jsonify(problems=[p.as_dict() for p in err.problems], warnings=warnings), 422
    except EngineError as err:
        return jsonify(problems=[Problem("", None, err.message).as_dict()], warnings=warnings), 409
    for name in {key, definition.process_key}:  # deployed: the draft it came from is done with
        draft_path(name).unlink(missing_ok=True)
        shutil.rmtree(draft_forms_dir(name), ignore_errors=True)
    return jsonify(
        problems=[],
        warnings=warnings,
        process=definition.process_key,
        version=definition.version,
        message=_("内容与第 %(version)s 版相同,没有产生新版本", version=definition.version)
        if definition.id in known
        else _("已部署 %(key)s 第 %(version)s 版", key=definition.process_key, version=definition.version),
        url=url_for("designer.index"),
    )


def check(files: dict[str, str], key: str | None) -> list[Problem]:
    """Exactly what deploy checks (compile_bundle); anything it did not foresee is a problem, not a 500."""
    try:
        compile_bundle(Bundle.from_files(files), key or None)
    except BundleInvalid as err:
        return err.problems
    except Exception as err:  # a construct the parser chokes on: tell the designer, keep the page
        current_app.logger.warning("designer validation failed unexpectedly: %s", err)
        return [Problem("", None, _("无法解析该流程:%(error)s", error=f"{type(err).__name__}: {err}"))]
    return []


def _submitted() -> tuple[Any, tuple[Response, int] | None]:
    """(bundle files, process key, warnings) from the posted JSON, or an error response."""
    body = request.get_json(silent=True) or {}
    text, key, version = body.get("xml"), body.get("key") or "", body.get("version")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_XML:
        return None, (jsonify(problems=[Problem("", None, _("没有收到流程图")).as_dict()]), 400)
    if key and not KEY.match(str(key)):
        return None, (jsonify(problems=[Problem("", None, _("流程标识不合法")).as_dict()]), 400)
    base = None
    if key and isinstance(version, int):
        with current_engine().db.read() as s:
            base = s.execute(
                select(Definition).where(Definition.process_key == key, Definition.version == version)
            ).scalar_one_or_none()
            sources = dict(base.sources) if base else {}
    else:
        sources = {}
    sources.update(draft_forms(str(key)))  # forms saved in the form editor win over the deployed ones
    return (bundle_files(text, key, sources), key, foreign_warnings(text)), None


def bundle_files(xml_text: str, key: str, sources: dict[str, str]) -> dict[str, str]:
    """The bundle a deploy of ``xml_text`` stores: the base version's files with the diagram replaced,
    plus forms and DMN it references that are not in the bundle yet (from forms/ and workflows/)."""
    files = dict(sources)
    name = (main_file(files, key) if key else None) or f"{key or _process_id(xml_text) or 'process'}.bpmn"
    files[name] = xml_text
    try:
        tree = parse_xml(xml_text.encode("utf-8"), name)
    except UnsafeXML:
        return files  # compile_bundle reports it, with file and line
    wanted_forms = {
        p.get("value", "") for p in tree.iter(f"{{{SPIFF_NS}}}property") if p.get("name") == FORM_PROPERTY
    }
    for form in sorted(wanted_forms - set(files)):
        path = FORMS / Path(form).name
        if path.is_file():
            files[path.name] = path.read_text("utf-8")
    decisions = {(d.text or "").strip() for d in tree.iter(f"{{{SPIFF_NS}}}calledDecisionId")}
    known = " ".join(t for n, t in files.items() if n.lower().endswith(".dmn"))
    dmn = _decision_files(sorted(WORKFLOWS.glob("*.dmn")))
    for decision in sorted(decisions):
        if decision in dmn and f'id="{decision}"' not in known:
            files[dmn[decision].name] = dmn[decision].read_text("utf-8")
    return files


def decision_ids(sources: dict[str, str]) -> list[str]:
    """Decisions a business rule task may call: the bundle's DMN and workflows/*.dmn, the same two
    places ``bundle_files`` takes them from on deploy."""
    found = set(_decision_files(sorted(WORKFLOWS.glob("*.dmn"))))
    for name, text in sources.items():
        if not name.lower().endswith(".dmn"):
            continue
        try:
            tree = parse_xml(text.encode("utf-8"), name)
        except UnsafeXML:
            continue
        found |= {
            n.get("id", "") for n in tree.iter() if isinstance(n.tag, str) and n.tag.endswith("}decision")
        }
    found.discard("")
    return sorted(found)


def _process_id(xml_text: str) -> str | None:
    match = re.search(r'<[\w:]*process\b[^>]*\bid="([^"]+)"', xml_text)
    return match.group(1) if match and KEY.match(match.group(1)) else None


def foreign_warnings(xml_text: str) -> list[dict[str, str | None]]:
    """Other modelers' extension attributes and elements, which the engine ignores: say which, where."""
    try:
        tree = parse_xml(xml_text.encode("utf-8"), "diagram.bpmn")
    except UnsafeXML:
        return []
    found: dict[tuple[str | None, str], dict[str, str | None]] = {}
    for node in tree.iter():
        if not isinstance(node.tag, str):
            continue
        owner = node.get("id")
        names = [a for a in node.attrib if a.startswith("{")]
        if node.tag.startswith("{") and node.tag[1:].split("}")[0] in FOREIGN:
            names.append(node.tag)
            owner = next((a.get("id") for a in node.iterancestors() if a.get("id")), None)
        for qname in names:
            ns, local = qname[1:].split("}")
            if ns in FOREIGN:
                found.setdefault(
                    (owner, local),
                    {
                        "element": owner,
                        "message": _(
                            "%(tool)s 扩展 %(name)s 本平台不支持,部署后将被忽略", tool=FOREIGN[ns], name=local
                        ),
                    },
                )
    return list(found.values())


# --- migration -------------------------------------------------------------------------------------


@bp.get("/migrate")
@require_role(*ROLES_ALLOWED)
def migrate_plan() -> str:
    key = request.args.get("key") or ""
    source, target = request.args.get("from", type=int), request.args.get("to", type=int)
    engine = current_engine()
    with engine.db.read() as s:
        old, new = _definition(s, key, source), _definition(s, key, target)
    checks = dry_run(engine, key, old.version, new.version)
    return render_template(
        "designer/migrate.html", key=key, old=old, new=new, checks=checks, status_labels=STATUS_LABELS
    )


@bp.post("/migrate")
@require_role(*ROLES_ALLOWED)
def migrate() -> Response:
    key = request.form.get("key") or ""
    source, target = request.form.get("from", type=int), request.form.get("to", type=int)
    engine = current_engine()
    with engine.db.read() as s:
        old, new = _definition(s, key, source), _definition(s, key, target)
    try:
        results = migrate_all(engine, key, old.version, new.version, current_user.username)
    except EngineError as err:
        flash(err.message, "error")
    else:
        moved = sum(r.moved for r in results)
        flash(
            _("已迁移 %(moved)s 个实例,%(kept)s 个保留在原版本", moved=moved, kept=len(results) - moved),
            "success",
        )
    return redirect(url_for("designer.migrate_plan", key=key, **{"from": old.version, "to": new.version}))
