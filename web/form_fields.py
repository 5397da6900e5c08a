"""A form's JSON Schema as rows a designer edits (key, title, kind, required, choices, limits) and back.

Only flat forms have rows: a form with nested objects or lists of rows is edited as JSON, since a
table of fields cannot say what it says. ``to_rows(from_rows(rows)) == rows`` for every row this
module produces, so switching views loses nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from jsonschema import Draft202012Validator, SchemaError

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
FORM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}\.json$")
MAX_FIELDS = 60
MAX_JSON = 200_000

# kind → the schema that says it; the order is the order of the editor's select
KINDS: dict[str, dict[str, Any]] = {
    "text": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "choice": {"type": "string"},  # with "enum"
    "attachment": {"type": "string", "format": "attachment"},
}


@dataclass
class Row:
    key: str = ""
    title: str = ""
    kind: str = "text"
    required: bool = False
    choices: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


@dataclass
class Draft:
    """What the editor holds: the form's title and rows, or its JSON when rows cannot say it."""

    title: str = ""
    description: str = ""
    rows: list[Row] = field(default_factory=list)
    raw: str | None = None  # set: edited as JSON


def kind_of(prop: dict[str, Any]) -> str | None:
    """The row kind a property is, or None when a row cannot hold it (objects, arrays, other keys)."""
    if set(prop) - {"type", "title", "description", "enum", "format", "minimum", "maximum"}:
        return None
    if "enum" in prop:
        return "choice" if prop.get("type") == "string" and "format" not in prop else None
    for kind, shape in KINDS.items():
        if (
            kind != "choice"
            and {k: prop.get(k) for k in ("type", "format") if k in prop or k in shape} == shape
        ):
            return kind
    return None


def to_draft(schema: dict[str, Any]) -> Draft:
    """Rows when every property fits one; otherwise the JSON itself."""
    props = schema.get("properties") or {}
    rows = []
    flat = set(schema) <= {
        "$schema",
        "type",
        "title",
        "description",
        "properties",
        "required",
        "additionalProperties",
    }
    for key, prop in props.items():
        kind = kind_of(prop) if isinstance(prop, dict) else None
        if kind is None or not flat:
            return Draft(raw=json.dumps(schema, ensure_ascii=False, indent=2))
        rows.append(
            Row(
                key=key,
                title=str(prop.get("title", "")),
                kind=kind,
                required=key in (schema.get("required") or []),
                choices=[str(c) for c in prop.get("enum", [])],
                minimum=prop.get("minimum"),
                maximum=prop.get("maximum"),
                description=str(prop.get("description", "")),
            )
        )
    return Draft(str(schema.get("title", "")), str(schema.get("description", "")), rows)


def from_rows(draft: Draft) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for row in draft.rows:
        prop: dict[str, Any] = {**KINDS[row.kind], "title": row.title or row.key}
        if row.description:
            prop["description"] = row.description
        if row.kind == "choice":
            prop["enum"] = row.choices
        if row.kind in ("number", "integer"):
            prop.update(
                {k: v for k, v in (("minimum", row.minimum), ("maximum", row.maximum)) if v is not None}
            )
        properties[row.key] = prop
    schema: dict[str, Any] = {"type": "object", "title": draft.title, "properties": properties}
    if draft.description:
        schema["description"] = draft.description
    if required := [r.key for r in draft.rows if r.required]:
        schema["required"] = required
    return schema


def read_posted(form: Any) -> tuple[Draft, list[str]]:
    """The editor's posted fields (``rows-N-key`` …, or ``raw``) as a draft, with what is wrong in it."""
    if form.get("mode") == "raw":
        return Draft(raw=str(form.get("raw", ""))[:MAX_JSON]), []
    problems: list[str] = []
    rows = []
    for i in range(MAX_FIELDS):
        key = str(form.get(f"rows-{i}-key", "")).strip()
        if not key:
            continue
        row = Row(
            key=key,
            title=str(form.get(f"rows-{i}-title", "")).strip()[:200],
            kind=str(form.get(f"rows-{i}-kind", "text")),
            required=form.get(f"rows-{i}-required") == "on",
            choices=[c.strip() for c in str(form.get(f"rows-{i}-choices", "")).splitlines() if c.strip()],
            minimum=_number(form.get(f"rows-{i}-minimum"), problems, key),
            maximum=_number(form.get(f"rows-{i}-maximum"), problems, key),
            description=str(form.get(f"rows-{i}-description", "")).strip()[:500],
        )
        rows.append(row)
    draft = Draft(
        str(form.get("title", "")).strip()[:200], str(form.get("description", "")).strip()[:500], rows
    )
    return draft, problems + row_problems(draft)


def _number(text: Any, problems: list[str], key: str) -> float | None:
    text = str(text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(_("%(key)s:“%(text)s”不是数字", key=key, text=text))
        return None
    return int(value) if value.is_integer() else value


def row_problems(draft: Draft) -> list[str]:
    out = []
    seen: set[str] = set()
    for row in draft.rows:
        if not KEY.match(row.key):
            out.append(_("%(key)s:字段名只能用字母、数字和下划线，且不以数字开头", key=row.key))
        if row.key in seen:
            out.append(_("%(key)s:字段名重复", key=row.key))
        seen.add(row.key)
        if row.kind not in KINDS:
            out.append(_("%(key)s:未知的字段类型", key=row.key))
        if row.kind == "choice" and not row.choices:
            out.append(_("%(key)s:选项字段至少要有一个选项", key=row.key))
        if row.minimum is not None and row.maximum is not None and row.minimum > row.maximum:
            out.append(_("%(key)s:最小值大于最大值", key=row.key))
    if not draft.title:
        out.append(_("表单标题不能为空"))
    return out


def schema_of(draft: Draft) -> tuple[dict[str, Any] | None, list[str]]:
    """The JSON Schema a draft stands for, checked as deploy checks it (Draft 2020-12)."""
    if draft.raw is None:
        schema: Any = from_rows(draft)
    else:
        try:
            schema = json.loads(draft.raw)
        except json.JSONDecodeError as err:
            return None, [_("不是合法的 JSON：%(msg)s（第 %(line)d 行）", msg=err.msg, line=err.lineno)]
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None, [_("表单须是 type 为 object 的 JSON Schema")]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        return None, [_("不是合法的 JSON Schema：%(msg)s", msg=err.message)]
    return schema, []
