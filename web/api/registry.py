"""One declaration per endpoint, from which both the Flask route and its OpenAPI entry are made.

A view is declared with :func:`operation`: method, path (OpenAPI style, ``/tasks/{task_id}``),
query parameters and request body as JSON Schemas, and the responses it gives. The same
declaration registers the Flask rule, checks the bearer token, parses and validates the query
and the body (so the document cannot promise a check the code does not make, or the reverse)
and becomes the operation in ``/api/v1/openapi.json``. The error responses each operation
can give (401, 400, 404, 413) follow from what it declares, so they are never forgotten.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, request
from flask_babel import gettext as _
from jsonschema import Draft202012Validator
from werkzeug.wrappers import Response

from engine.forms import field_errors
from web.api.auth import authenticate
from web.api.errors import bad_request
from web.api.schemas import MAX_ID, SCHEMAS

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# ids are BIGINT on PostgreSQL: a path id above MAX_ID names nothing, so the route does not match (404)
ID_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_PATH_PARAM = re.compile(r"\{(\w+)\}")
JSON = "application/json"
MAX_DEPTH = 32  # nesting of a request body; forms are a few levels deep
MULTIPART = "multipart/form-data"

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Malformed request: bad JSON, a parameter or body field of the wrong shape",
    401: "Missing, unknown or revoked bearer token",
    403: "The caller's roles do not allow this",
    404: "No such resource, or the caller may not see it",
    409: "Conflict: already completed, claimed by someone else, or changed since the given revision",
    413: "Request body too large",
    422: "Refused by validation (form fields, bundle problems, a failing process step)",
}


@dataclass(frozen=True)
class Param:
    """A query parameter: its JSON Schema is both the documentation and the check."""

    name: str
    schema: dict[str, Any]
    description: str

    def parse(self, raw: str) -> Any:
        kind = self.schema.get("type")
        if kind == "integer":
            if not re.fullmatch(r"-?[0-9]{1,20}", raw):
                raise ValueError("must be an integer")
            return int(raw)
        if kind == "boolean":
            if raw not in ("true", "false", "1", "0"):
                raise ValueError("must be true or false")
            return raw in ("true", "1")
        return raw


@dataclass(frozen=True)
class Body:
    """A request body: JSON validated against ``schema``, or a multipart form the view reads itself."""

    schema: str  # name of a component schema
    media: str = JSON
    required: bool = True
    example: Any = None  # shown in the document; schemathesis sends it too


@dataclass
class Operation:
    """One endpoint as declared: what the route checks and what the document says, from one place."""

    method: str
    path: str
    endpoint: str
    summary: str
    description: str
    tag: str
    responses: dict[int, tuple[str, str | None]]
    query: tuple[Param, ...] = ()
    body: Body | None = None
    errors: tuple[int, ...] = ()
    public: bool = False
    path_params: tuple[str, ...] = ()

    @property
    def flask_rule(self) -> str:
        return _PATH_PARAM.sub(rf"<int(min=1, max={MAX_ID}):\1>", self.path)

    def error_statuses(self) -> list[int]:
        implied = set(self.errors)
        if not self.public:
            implied.add(401)
        if self.query or self.body:
            implied.add(400)
        if self.body:
            implied.add(413)
        if self.path_params:
            implied.add(404)
        return sorted(implied)

    def openapi(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "operationId": self.endpoint,
            "summary": self.summary,
            "description": self.description,
            "tags": [self.tag],
            "parameters": [
                {"name": n, "in": "path", "required": True, "schema": ID_SCHEMA} for n in self.path_params
            ]
            + [
                {
                    "name": p.name,
                    "in": "query",
                    "required": False,
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in self.query
            ],
            "responses": {},
        }
        if self.public:
            spec["security"] = []
        if self.body is not None:
            media: dict[str, Any] = {"schema": _ref(self.body.schema)}
            if self.body.example is not None:
                media["example"] = self.body.example
            spec["requestBody"] = {"required": self.body.required, "content": {self.body.media: media}}
        for status, (text, schema) in sorted(self.responses.items()):
            spec["responses"][str(status)] = {
                "description": text,
                "content": {JSON: {"schema": _ref(schema) if schema else {}}},
            }
        for status in self.error_statuses():
            spec["responses"][str(status)] = {"$ref": f"#/components/responses/E{status}"}
        return spec


OPERATIONS: list[Operation] = []


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def operation(
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    responses: dict[int, tuple[str, str | None]],
    query: tuple[Param, ...] = (),
    body: Body | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Declare and register an API view. The view gets ``args`` (parsed query) and ``body`` if declared."""

    def register(view: Callable[..., Response]) -> Callable[..., Response]:
        op = Operation(
            method=method,
            path=path,
            endpoint=view.__name__,
            summary=summary,
            description=inspect.cleandoc(view.__doc__ or summary),
            tag=tag,
            responses=responses,
            query=query,
            body=body,
            errors=errors,
            public=public,
            path_params=tuple(_PATH_PARAM.findall(path)),
        )

        @wraps(view)
        def handle(**kwargs: Any) -> Response:
            if not op.public:
                authenticate()
            if op.query:
                kwargs["args"] = parse_query(op.query)
            if op.body is not None and op.body.media == JSON:
                kwargs["body"] = parse_body(op.body)
            return view(**kwargs)

        bp.add_url_rule(op.flask_rule, op.endpoint, handle, methods=[method])
        OPERATIONS.append(op)
        return view

    return register


def parse_query(params: tuple[Param, ...]) -> dict[str, Any]:
    """Known parameters converted and checked against their schemas; every problem reported at once."""
    values: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for param in params:
        raw = request.args.get(param.name)
        if raw is None:
            values[param.name] = param.schema.get("default")
            continue
        try:
            value = param.parse(raw)
        except ValueError as err:
            problems[param.name] = [str(err)]
            continue
        found = [e.message for e in Draft202012Validator(param.schema).iter_errors(value)]
        if "\x00" in raw:
            found.append("must not contain NUL characters")
        if found:
            problems[param.name] = found
        values[param.name] = value
    if problems:
        raise bad_request(_("查询参数有误。"), problems)
    return values


def parse_body(body: Body) -> Any:
    """The JSON body, refused with 400 unless it is well-formed, storable text and matches the schema."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if body.required:
            raise bad_request(_("请求体不能为空，应为 JSON 对象。"), None)
        return {}
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as err:
        raise bad_request(_("请求体不是有效的 JSON。"), {"": [str(err)[:200]]}) from err
    _check_text(value, "", 0)
    problems = field_errors(SCHEMAS[body.schema], value)
    if problems:
        raise bad_request(_("请求体字段有误。"), problems)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    """1e400 parses to infinity, which no JSON column can store back: refuse it like NaN."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def _check_text(value: Any, where: str, depth: int) -> None:
    """Strings must be storable (PostgreSQL refuses NUL; lone surrogates are not UTF-8), and nesting
    is bounded so that no later step (validation, audit hashing, the engine) runs out of stack."""
    if depth > MAX_DEPTH:
        raise bad_request(_("请求体嵌套过深。"), {where: [f"nested deeper than {MAX_DEPTH} levels"]})
    if isinstance(value, str):
        if "\x00" in value:
            raise bad_request(_("文本中不能含有 NUL 字符。"), {where: ["contains a NUL character"]})
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise bad_request(_("文本不是有效的 Unicode。"), {where: ["not valid Unicode text"]}) from err
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            _check_text(key, path, depth + 1)
            _check_text(item, path, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{where}.{i}" if where else str(i), depth + 1)


__all__ = ["Body", "OPERATIONS", "Param", "STATUS_TEXT", "bp", "operation"]
