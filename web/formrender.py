"""Task forms from JSON Schema: which widget a field gets, reading a posted form back into typed JSON,
and validation messages a person can act on.

The Jinja2 macros in ``templates/forms/fields.html`` draw what this module decides; the engine
(``engine.forms``) stays the one judge of whether data is valid. This module only turns browser
strings back into the JSON the schema describes, so that judgement is about the user's intent.

**Field names.** A field's HTML name is its path joined by ``-``: ``budget``, ``progress-summary``
(a nested object), ``pledges-0-target`` (row 0 of an array of objects), ``problems-1`` (item 1 of
an array of strings). Row numbers in names need not be contiguous (script may add and remove rows);
rows are read in number order, blank rows are dropped, and the data is compacted, so error paths
(dotted, as ``engine.forms`` reports them: ``pledges.1.target``) index the compacted array.
``<array>-rows`` carries how many rows the page showed, so a re-rendered page keeps its blank rows.
A submit button named ``_add`` (value: the array's name) or ``_remove`` (value: a row's name)
re-renders the form with a row more or less, without submitting: add/remove works without script.

**Attachments.** A string field with ``"format": "attachment"`` is a file upload; an array whose
items have that format takes several files. The stored value is a reference string
``attachment:<id>:<original filename>`` (see :func:`attachment_ref`), so it fits any string schema
and reads sensibly in the instance data. The page sends an already stored reference back as
``<name>-keep`` (one per kept file, a checkbox the user can untick) and new files under ``<name>``.
JSON Schema's format checker ignores unknown formats, so older plain-text values (a file name
typed by hand) stay valid and are shown as text. A kept reference must name an attachment of the
same instance (checked by the task view), so a crafted form cannot borrow another instance's file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.datastructures import FileStorage, MultiDict

ATTACHMENT_FORMAT = "attachment"
REF_PREFIX = "attachment:"
PENDING_ID = 0  # the id in a placeholder reference of a file not stored yet
LONG_TEXT = 200  # strings allowed to be longer than this get a textarea
MAX_ROWS = 50  # when a schema sets no maxItems: a page never grows past this many rows

# Process vocabulary that forms store as codes (the schema's enum) but people read as words.
CHOICE_LABELS: dict[str, Any] = {
    "approve": _l("通过"),
    "return": _l("退回修改"),
    "reject": _l("不予通过"),
    "on_time": _l("按期推进"),
    "warning": _l("逾期预警"),
    "P30D": _l("每月检查一次"),
    "P90D": _l("每季度检查一次"),
}


# --- references to stored attachments ------------------------------------------------------------


def attachment_ref(attachment_id: int, filename: str) -> str:
    return f"{REF_PREFIX}{attachment_id}:{filename}"


def parse_ref(value: Any) -> tuple[int, str] | None:
    """(id, filename) of a reference string, or None for anything else (plain text stays text)."""
    if not isinstance(value, str) or not value.startswith(REF_PREFIX):
        return None
    number, _sep, filename = value[len(REF_PREFIX) :].partition(":")
    if not number.isdigit() or not filename:
        return None
    return int(number), filename


def is_attachment(prop: Mapping[str, Any]) -> bool:
    return prop.get("format") == ATTACHMENT_FORMAT


# --- widgets --------------------------------------------------------------------------------------


def _type(prop: Mapping[str, Any]) -> str | None:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind


def field_kind(prop: Mapping[str, Any], in_array: bool = False) -> str:
    """The widget for a schema node: object, rows, files, list, file, select, radios, confirm, yesno,
    integer, number, date, textarea or text."""
    kind = _type(prop)
    if kind == "object":
        return "object"
    if kind == "array":
        items = prop.get("items") or {}
        if _type(items) == "object":
            return "rows"
        return "files" if is_attachment(items) else "list"
    if is_attachment(prop):
        return "file"
    if "enum" in prop:
        return "select" if len(prop["enum"]) > 4 else "radios"
    if kind == "boolean":
        return "confirm" if prop.get("const") is True else "yesno"
    if kind in ("integer", "number"):
        return kind
    if prop.get("format") == "date":
        return "date"
    limit = prop.get("maxLength")
    if (limit is not None and limit > LONG_TEXT) or (limit is None and not in_array):
        return "textarea"
    return "text"


def choice_label(value: Any) -> str:
    """How an enum value reads: a known code's words, else the value through the form catalog."""
    if isinstance(value, str):
        known = CHOICE_LABELS.get(value)
        return str(known) if known is not None else (_(value) if value else "")
    return str(value)


def row_count(prop: Mapping[str, Any], value: Any, shown: int = 0) -> int:
    """How many rows an array shows: its items, what the page showed before, at least minItems (or 1)."""
    have = len(value) if isinstance(value, list) else 0
    least = max(int(prop.get("minItems") or 0), 1)
    return min(max(have, shown, least), max_rows(prop))


def max_rows(prop: Mapping[str, Any]) -> int:
    return int(prop.get("maxItems") or MAX_ROWS)


def html_name(*parts: Any) -> str:
    return "-".join(str(p) for p in parts if p != "")


def dotted(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p != "")


def initial_values(schema: Mapping[str, Any] | None, source: Mapping[str, Any]) -> dict[str, Any]:
    """The form's starting values: the task's data for the fields the form declares, else defaults."""
    out: dict[str, Any] = {}
    for name, prop in ((schema or {}).get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if name in source and source[name] is not None:
            out[name] = source[name]
        elif "default" in prop:
            out[name] = prop["default"]
    return out


def material(
    forms: Mapping[str, Mapping[str, Any]], own: Mapping[str, Any] | None, data: Mapping[str, Any]
) -> dict[str, Any]:
    """What earlier steps entered, for the person doing this one: a schema-shaped view of the data.

    Only fields some form of the process declares (not the process's bookkeeping), not those of
    this task's own form (they are in the form), in the order the data holds them. Returns
    ``{"properties": {...}, "values": {...}}`` for the read-only macros.
    """
    declared: dict[str, Any] = {}
    for name in sorted(forms):
        for key, prop in (forms[name].get("properties") or {}).items():
            if isinstance(prop, dict):
                declared.setdefault(key, prop)
    mine = set(((own or {}).get("properties") or {}).keys())
    keys = [k for k in data if k in declared and k not in mine and data[k] not in (None, "", [], {})]
    return {"properties": {k: declared[k] for k in keys}, "values": {k: data[k] for k in keys}}


# --- reading a posted form back -------------------------------------------------------------------


@dataclass
class Upload:
    """A new file for an attachment field; ``path`` is where its reference goes in the data."""

    path: tuple[str | int, ...]
    file: FileStorage

    @property
    def dotted(self) -> str:
        """The field's error path (the array, not the item, for a list of files)."""
        parts = self.path[:-1] if isinstance(self.path[-1], int) else self.path
        return dotted(*parts)


@dataclass
class Parsed:
    data: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)  # what could not even be read
    uploads: list[Upload] = field(default_factory=list)
    kept: list[tuple[str, int]] = field(default_factory=list)  # (error path, attachment id) sent back
    rows: dict[str, int] = field(default_factory=dict)  # array name → rows the page should show
    action: str | None = None  # "add"/"remove": redraw with a row more or less, do not submit


def parse(
    schema: Mapping[str, Any] | None, form: MultiDict[str, str], files: MultiDict[str, FileStorage]
) -> Parsed:
    """The posted form as the JSON its schema describes; unreadable values are kept raw with an error."""
    removed = form.get("_remove", "")
    if removed:
        form = MultiDict([(k, v) for k, v in form.items(multi=True) if not _under(k, removed)])
        files = MultiDict([(k, v) for k, v in files.items(multi=True) if not _under(k, removed)])
    reader = _Reader(form, files)
    data = reader.object(schema or {}, ())
    parsed = Parsed(data, reader.errors, reader.uploads, reader.kept, reader.rows)
    added = form.get("_add", "")
    if added and added in parsed.rows:
        parsed.action = "add"
        parsed.rows[added] += 1
    elif removed:
        parsed.action = "remove"
        array = removed.rpartition("-")[0]
        if array in parsed.rows:
            parsed.rows[array] = max(parsed.rows[array] - 1, 0)
    return parsed


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + "-")


class _Reader:
    def __init__(self, form: MultiDict[str, str], files: MultiDict[str, FileStorage]) -> None:
        self.form = form
        self.files = files
        self.errors: dict[str, list[str]] = {}
        self.uploads: list[Upload] = []
        self.kept: list[tuple[str, int]] = []
        self.rows: dict[str, int] = {}

    def error(self, path: tuple[str | int, ...], message: str) -> None:
        self.errors.setdefault(dotted(*path), []).append(message)

    def object(self, schema: Mapping[str, Any], path: tuple[str | int, ...]) -> Any:
        out: dict[str, Any] = {}
        for key, prop in (schema.get("properties") or {}).items():
            if not isinstance(prop, dict):
                continue
            child = (*path, key)
            present, value = self.value(prop, child, key in (schema.get("required") or ()))
            if present:
                out[key] = value
        return out

    def value(self, prop: Mapping[str, Any], path: tuple[str | int, ...], required: bool) -> tuple[bool, Any]:
        kind = field_kind(prop)
        name = html_name(*path)
        if kind == "object":
            inner = self.object(prop, path)
            return bool(inner) or required, inner
        if kind == "rows":
            return self.rows_of(prop, path, name)
        if kind == "list":
            return self.list_of(prop, path, name)
        if kind == "files":
            return self.files_of(path, name)
        if kind == "file":
            return self.one_file(path, name)
        if kind == "confirm":
            return True, self.form.get(name) in ("true", "on", "1")
        return self.scalar(prop, kind, path, self.form.get(name))

    def scalar(
        self, prop: Mapping[str, Any], kind: str, path: tuple[str | int, ...], raw: str | None
    ) -> tuple[bool, Any]:
        text = (raw or "").strip()
        if not text:
            return False, None
        if kind == "yesno":
            if text in ("true", "false"):
                return True, text == "true"
            self.error(path, _("请选择“是”或“否”"))
            return True, text
        if kind in ("integer", "number"):
            number = _number(text, integer=kind == "integer")
            if number is None:
                self.error(path, _("请输入整数") if kind == "integer" else _("请输入数字"))
                return True, text
            return True, number
        if kind in ("select", "radios"):
            for choice in prop["enum"]:
                if str(choice) == text:
                    return True, choice
            return True, text  # the schema says it is not one of the choices
        return True, text

    def _indices(self, name: str) -> list[int]:
        pattern = re.compile(rf"^{re.escape(name)}-(\d+)(?:-|$)")
        keys: Iterable[str] = [*self.form.keys(), *self.files.keys()]
        return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})

    def _shown(self, name: str) -> int:
        raw = self.form.get(f"{name}-rows", "")
        return min(int(raw), MAX_ROWS) if raw.isdigit() else 0

    def rows_of(self, prop: Mapping[str, Any], path: tuple[str | int, ...], name: str) -> tuple[bool, Any]:
        items = prop.get("items") or {}
        out: list[Any] = []
        for index in self._indices(name):
            row_name = f"{name}-{index}"
            if self._blank(row_name):
                continue
            out.append(self.object_at(items, (*path, len(out)), row_name))
        self.rows[name] = self._shown(name)
        return bool(out) or self._was_shown(name), out

    def object_at(self, items: Mapping[str, Any], path: tuple[str | int, ...], row_name: str) -> Any:
        """A row: read under its HTML name (row_name), reported under its compacted path."""
        new_name = html_name(*path)
        reader = _Reader(_renamed(self.form, row_name, new_name), _renamed(self.files, row_name, new_name))
        value = reader.object(items, path)
        for key, messages in reader.errors.items():
            self.errors.setdefault(key, []).extend(messages)
        self.uploads += reader.uploads
        self.kept += reader.kept
        self.rows.update(reader.rows)
        return value

    def list_of(self, prop: Mapping[str, Any], path: tuple[str | int, ...], name: str) -> tuple[bool, Any]:
        items = prop.get("items") or {}
        kind = field_kind(items, in_array=True)
        out: list[Any] = []
        for index in self._indices(name):
            present, value = self.scalar(items, kind, (*path, len(out)), self.form.get(f"{name}-{index}"))
            if present:
                out.append(value)
        self.rows[name] = self._shown(name)
        return bool(out) or self._was_shown(name), out

    def files_of(self, path: tuple[str | int, ...], name: str) -> tuple[bool, Any]:
        out: list[Any] = []
        for value in self.form.getlist(f"{name}-keep"):
            out.append(self.keep(value, path))
        for upload in self.files.getlist(name):
            if upload and upload.filename:
                self.uploads.append(Upload((*path, len(out)), upload))
                out.append(attachment_ref(PENDING_ID, clean_filename(upload.filename)))
        return bool(out) or f"{name}-shown" in self.form, out

    def one_file(self, path: tuple[str | int, ...], name: str) -> tuple[bool, Any]:
        upload = self.files.get(name)
        if upload and upload.filename:
            self.uploads.append(Upload(path, upload))
            return True, attachment_ref(PENDING_ID, clean_filename(upload.filename))
        kept = self.form.get(f"{name}-keep", "")
        return (True, self.keep(kept, path)) if kept else (False, None)

    def keep(self, value: str, path: tuple[str | int, ...]) -> str:
        ref = parse_ref(value)
        if ref is not None:
            self.kept.append((dotted(*path), ref[0]))
        elif value.startswith(REF_PREFIX):
            self.error(path, _("附件引用无效，请重新上传"))
        return value

    def _blank(self, row_name: str) -> bool:
        for key, value in self.form.items(multi=True):
            bookkeeping = key.endswith(("-rows", "-shown"))
            if _under(key, row_name) and not bookkeeping and value.strip():
                return False
        return not any(_under(k, row_name) and f and f.filename for k, f in self.files.items(multi=True))

    def _was_shown(self, name: str) -> bool:
        return f"{name}-rows" in self.form


def _renamed(source: MultiDict[str, Any], old: str, new: str) -> MultiDict[str, Any]:
    """The entries under ``old`` (a row's HTML name) re-keyed under ``new`` (its compacted name)."""
    return MultiDict([(new + k[len(old) :], v) for k, v in source.items(multi=True) if _under(k, old)])


def _number(text: str, integer: bool) -> int | float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if value.is_integer() and ("." not in text or integer) and "e" not in text.lower():
        return int(value)
    return None if integer else value


def clean_filename(name: str) -> str:
    """The name a person gave their file, without any directory and control characters, at most 200."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().strip(".") or "file"
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = (stem[:190] + dot + ext[:9]) if dot and len(ext) < 10 else base[:200]
    return base


def set_at(data: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def drop_pending(data: dict[str, Any], uploads: list[Upload]) -> dict[str, Any]:
    """The data without the placeholders of files not stored (a redrawn form cannot refill a file input)."""
    for upload in reversed(uploads):  # read in document order: later items of a list first
        parent: Any = data
        for part in upload.path[:-1]:
            parent = parent[part]
        del parent[upload.path[-1]]
    return data


# --- messages ---------------------------------------------------------------------------------------


def node_at(schema: Mapping[str, Any] | None, path: str) -> Mapping[str, Any]:
    """The schema of the field at a dotted error path (``pledges.1.target``), or {}."""
    node: Any = schema or {}
    for part in path.split(".") if path else ():
        if not isinstance(node, Mapping):
            return {}
        node = node.get("items", {}) if part.isdigit() else (node.get("properties") or {}).get(part, {})
    return node if isinstance(node, Mapping) else {}


def friendly(schema: Mapping[str, Any] | None, errors: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """``engine.forms`` messages (jsonschema's English) as short Chinese messages for each field."""
    out: dict[str, list[str]] = {}
    for path, messages in errors.items():
        node = node_at(schema, path)
        words = [message_for(node, m) for m in messages]
        out[path] = list(dict.fromkeys(words))
    return out


def message_for(node: Mapping[str, Any], message: str) -> str:
    kind = _type(node)
    if message == "required":
        return _("必填")
    if message == "unknown field":
        return _("表单中没有此项")
    if message.endswith("should be non-empty"):
        return _("至少填写 %(n)d 项", n=int(node.get("minItems") or 1)) if kind == "array" else _("不能为空")
    if message.endswith("is too short"):
        if kind == "array":
            return _("至少填写 %(n)d 项", n=int(node.get("minItems") or 1))
        return _("至少 %(n)d 个字", n=int(node["minLength"])) if "minLength" in node else _("内容太短")
    if message.endswith("is too long"):
        if kind == "array":
            return _("最多 %(n)d 项", n=int(node.get("maxItems") or 0))
        return _("最多 %(n)d 个字", n=int(node["maxLength"])) if "maxLength" in node else _("内容太长")
    if "less than" in message and "minimum" in message:
        return _("不能小于 %(n)s", n=_plain(node.get("minimum", node.get("exclusiveMinimum"))))
    if "greater than" in message and "maximum" in message:
        return _("不能大于 %(n)s", n=_plain(node.get("maximum", node.get("exclusiveMaximum"))))
    if "is not one of" in message:
        return _("请从选项中选择")
    if message.endswith("is not a 'date'"):
        return _("请输入有效日期（年-月-日）")
    if "is not of type 'integer'" in message:
        return _("请输入整数")
    if "is not of type 'number'" in message:
        return _("请输入数字")
    if message.endswith("was expected"):
        return _("请勾选确认") if kind == "boolean" else _("取值不正确")
    if message.endswith("has non-unique elements"):
        return _("不能有重复项")
    return _("填写有误")


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def merge_errors(*sources: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Errors by path; a path that could not be read keeps only that message (the rest follow from it)."""
    out: dict[str, list[str]] = {}
    for source in sources:
        for path, messages in source.items():
            if path not in out:
                out[path] = list(messages)
    return out


def unplaced(schema: Mapping[str, Any] | None, errors: Mapping[str, list[str]]) -> list[str]:
    """Messages whose path is no field the form shows (the form as a whole, unknown fields)."""
    return [m for path, messages in errors.items() if not path or not node_at(schema, path) for m in messages]
