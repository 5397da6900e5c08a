"""Server-side validation of submitted form data against the task's JSON Schema.

Forms are strict: a field the schema does not declare is refused, so a client cannot slip extra
variables into the process data. Errors come back per field, keyed by a dotted path.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from engine.errors import ValidationFailed


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(_strict(json.loads(schema_json)), format_checker=FormatChecker())


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def field_errors(schema: dict[str, Any], data: Any) -> dict[str, list[str]]:
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors: dict[str, list[str]] = {}
    for err in validator.iter_errors(data):
        base = list(err.absolute_path)
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else ""
            errors.setdefault(_path([*base, missing]), []).append("required")
        elif err.validator == "additionalProperties":
            extras = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            for name in extras:
                errors.setdefault(_path([*base, name]), []).append("unknown field")
        else:
            errors.setdefault(_path(base), []).append(err.message)
    return errors


def with_defaults(schema: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the data with each absent field that declares a ``default`` filled in (nested too)."""
    out = copy.deepcopy(data)
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        elif isinstance(out.get(name), dict) and prop.get("type") == "object":
            out[name] = with_defaults(prop, out[name])
    return out


def validate(schema: dict[str, Any] | None, data: Any) -> dict[str, Any]:
    """Return valid data (a copy, defaults filled in); raise ValidationFailed with every field's errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationFailed({"": ["form data must be an object"]})
    if schema is None:
        if data:
            raise ValidationFailed({k: ["unknown field"] for k in data})
        return {}
    data = with_defaults(schema, data)
    errors = field_errors(schema, data)
    if errors:
        raise ValidationFailed(errors)
    return data
