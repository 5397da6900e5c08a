"""The form editor (/designer/forms): a process's JSON-Schema forms as rows of fields, or as JSON.

The preview is drawn by the task page's own macros (templates/forms/fields.html), so what the
designer sees is what the member will fill in. Saved forms are the designer's draft for that process
(beside the diagram draft, see web.designer.draft_forms): the modeler offers them on user tasks, and
a deploy from the modeler takes them into the bundle, where deploy checks them like any other form.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from web import form_fields
from web.access import require_role
from web.designer import KEY, ROLES_ALLOWED, bundle_sources, draft_forms, draft_forms_dir
from web.form_fields import Draft, Row
from web.workflows import FORMS

bp = Blueprint("form_editor", __name__, url_prefix="/designer/forms")
SPARE_ROWS = 3


def _key() -> str:
    key = request.values.get("key") or ""
    if not KEY.match(key):
        abort(404)
    return key


def _name() -> str:
    name = request.values.get("name") or ""
    if not form_fields.FORM_NAME.match(name):
        abort(404)
    return name


def _stored(key: str, name: str) -> dict[str, Any] | None:
    """The form as the designer last saved it, else as deployed, else as in forms/; None: a new form."""
    text = draft_forms(key).get(name) or bundle_sources(key).get(name)
    if text is None and (FORMS / name).is_file():
        text = (FORMS / name).read_text("utf-8")
    return json.loads(text) if text else None


@bp.get("/")
@require_role(*ROLES_ALLOWED)
def index() -> str:
    key = _key()
    drafts = draft_forms(key)
    deployed = {n for n in bundle_sources(key) if n.endswith(".json")}
    names = sorted(deployed | set(drafts))
    return render_template("designer/forms.html", key=key, names=names, drafts=set(drafts))


@bp.get("/edit")
@require_role(*ROLES_ALLOWED)
def edit() -> str:
    key, name = _key(), _name()
    schema = _stored(key, name)
    draft = form_fields.to_draft(schema) if schema else Draft()
    if request.args.get("raw") and draft.raw is None:
        draft = Draft(raw=json.dumps(form_fields.from_rows(draft), ensure_ascii=False, indent=2))
    return _page(key, name, draft, [], schema)


def _page(key: str, name: str, draft: Draft, problems: list[str], schema: dict[str, Any] | None) -> str:
    rows = draft.rows + [Row() for _ in range(SPARE_ROWS)]
    return render_template(
        "designer/form_edit.html",
        key=key,
        name=name,
        draft=draft,
        rows=rows,
        kinds=_kind_labels(),
        problems=problems,
        schema=schema,
    )


def _kind_labels() -> dict[str, str]:
    return {
        "text": _("文本"),
        "number": _("数字"),
        "integer": _("整数"),
        "boolean": _("是/否"),
        "date": _("日期"),
        "choice": _("单选"),
        "attachment": _("附件"),
    }


@bp.post("/preview")
@require_role(*ROLES_ALLOWED)
def preview() -> str:
    """The form as a task page would draw it, for htmx to swap in beside the editor."""
    draft, problems = form_fields.read_posted(request.form)
    schema, invalid = form_fields.schema_of(draft)
    return render_template("designer/_form_preview.html", schema=schema, problems=problems + invalid)


@bp.post("/save")
@require_role(*ROLES_ALLOWED)
def save() -> Response | tuple[str, int]:
    key, name = _key(), _name()
    draft, problems = form_fields.read_posted(request.form)
    schema, invalid = form_fields.schema_of(draft)
    if problems or invalid or schema is None:
        return _page(key, name, draft, problems + invalid, schema), 422
    folder = draft_forms_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.part"
    partial.write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n", "utf-8")
    partial.replace(folder / name)  # never a half-written form
    flash(_("表单 %(name)s 已保存到草稿，在流程图中部署后生效。", name=name), "info")
    return redirect(url_for(".edit", key=key, name=name))
