"""The JSON Schemas of the API's bodies and answers: the OpenAPI document's components.

Answer schemas are closed (``additionalProperties: false``) and list every field as required, so
the document says exactly what comes back and the schemathesis test notices any drift. Request
schemas are closed too, and the registry validates bodies against them before a view runs.
"""

from __future__ import annotations

from typing import Any

MAX_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1

INT: dict[str, Any] = {"type": "integer"}
ID: dict[str, Any] = {"type": "integer", "minimum": 1}
TEXT: dict[str, Any] = {"type": "string"}
WHEN: dict[str, Any] = {"type": "string", "format": "date-time"}
CURSOR_PATTERN = "^[1-9][0-9]{0,18}$"


def maybe(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema or null (OpenAPI 3.1: JSON Schema 2020-12 type lists, no ``nullable``)."""
    return {**schema, "type": [schema["type"], "null"]}


def closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(properties) if required is None else required,
        "properties": properties,
    }


def page_of(item: str) -> dict[str, Any]:
    return closed(
        {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next_cursor": {
                **maybe({"type": "string", "pattern": CURSOR_PATTERN}),
                "description": "Pass as ?cursor= for the next page; null on the last page.",
            },
        }
    )


TASK_PROPERTIES: dict[str, Any] = {
    "id": ID,
    "instance_id": ID,
    "process": TEXT,
    "stage": maybe(TEXT),
    "title": TEXT,
    "form": maybe(TEXT),
    "lane": maybe(TEXT),
    "org": {**TEXT, "description": "Code of the organisation the task belongs to."},
    "assignee": maybe(TEXT),
    "holding": {
        "type": "string",
        "enum": ["claimed", "owner", "candidate"],
        "description": "claimed by the assignee, owned (assigned by the process), or offered to a role.",
    },
    "priority": INT,
    "due_at": maybe(WHEN),
    "created_at": WHEN,
    "state": {"type": "string", "enum": ["open", "completed", "cancelled"]},
    "completed_by": maybe(TEXT),
    "completed_at": maybe(WHEN),
}

INSTANCE_PROPERTIES: dict[str, Any] = {
    "id": ID,
    "process": TEXT,
    "version": ID,
    "status": {"type": "string", "enum": ["running", "completed", "failed", "terminated"]},
    "stage": maybe(TEXT),
    "title": maybe(TEXT),
    "org": TEXT,
    "business_key": maybe(TEXT),
    "started_by": TEXT,
    "started_at": WHEN,
    "updated_at": WHEN,
    "ended_at": maybe(WHEN),
    "revision": {
        **ID,
        "description": "Pass to /tasks/{id}/complete as revision to refuse stale submissions.",
    },
}

DEFINITION_PROPERTIES: dict[str, Any] = {
    "id": ID,
    "key": TEXT,
    "name": TEXT,
    "version": ID,
    "deployed_by": TEXT,
    "deployed_at": WHEN,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": closed(
        {
            "error": closed(
                {
                    "code": {**TEXT, "description": "Stable, for programs: not_found, conflict, …"},
                    "message": {**TEXT, "description": "For people."},
                    "details": {
                        "description": "Field errors {path: [messages]}, bundle problems "
                        "[{file, element, message}], or null."
                    },
                }
            )
        }
    ),
    "Problem": closed({"file": TEXT, "element": maybe(TEXT), "message": TEXT}),
    "Task": closed(TASK_PROPERTIES),
    "TaskDetail": closed(
        {
            **TASK_PROPERTIES,
            "form_schema": {
                **maybe({"type": "object"}),
                "description": "The JSON Schema the completion's data must satisfy; null: no form.",
            },
            "instance": closed(
                {
                    "id": ID,
                    "title": maybe(TEXT),
                    "status": INSTANCE_PROPERTIES["status"],
                    "stage": maybe(TEXT),
                    "revision": ID,
                }
            ),
        }
    ),
    "TaskPage": page_of("Task"),
    "Instance": closed(INSTANCE_PROPERTIES),
    "InstanceDetail": closed(
        {
            **INSTANCE_PROPERTIES,
            "data": {"type": "object"},
            "open_tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
            "incidents": {
                "type": "array",
                "items": closed({"id": ID, "kind": TEXT, "message": TEXT, "created_at": WHEN}),
            },
        }
    ),
    "InstancePage": page_of("Instance"),
    "Definition": closed(DEFINITION_PROPERTIES),
    "Deployed": closed(
        {
            **DEFINITION_PROPERTIES,
            "created": {"type": "boolean", "description": "false: this content was deployed before."},
        }
    ),
    "DefinitionList": closed(
        {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Definition"}}}
    ),
    "AuditEvent": closed(
        {
            "seq": ID,
            "at": WHEN,
            "actor": TEXT,
            "action": TEXT,
            "task_guid": maybe(TEXT),
            "payload": {"type": "object"},
            "prev_hash": TEXT,
            "hash": TEXT,
        }
    ),
    "AuditPage": page_of("AuditEvent"),
    "Verdict": closed(
        {
            "ok": {"type": "boolean"},
            "checked": {**INT, "minimum": 0},
            "first_bad_seq": maybe(INT),
            "reason": TEXT,
            "head_hash": TEXT,
        }
    ),
    "Delivered": closed(
        {"delivered": {"type": "array", "items": ID, "description": "Instances the message reached."}}
    ),
    # --- request bodies ---
    "StartInstance": closed(
        {
            "process": {"type": "string", "minLength": 1, "maxLength": 128, "description": "Process key."},
            "org": {"type": "string", "minLength": 1, "maxLength": 64, "description": "Organisation code."},
            "data": {"type": "object", "description": "Start data."},
            "business_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "Idempotency: starting again with the same key answers the existing instance.",
            },
            "version": {"type": "integer", "minimum": 1, "maximum": MAX_INT32},
        },
        required=["process", "org"],
    ),
    "CompleteTask": closed(
        {
            "data": {"type": "object", "description": "Form data, validated against the task's form."},
            "revision": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_INT32,
                "description": "Refuse with 409 if the instance changed since this revision.",
            },
        },
        required=[],
    ),
    "SendMessage": closed(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "payload": {"description": "Any JSON value; the process stores it in its message variable."},
            "business_key": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        required=["name"],
    ),
    "DeployBundle": {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": "application/octet-stream",
                },
                "description": "BPMN (.bpmn), DMN (.dmn) and form (.json) files, UTF-8.",
            },
            "key": {"type": "string", "maxLength": 128, "description": "Process to deploy if several."},
        },
    },
}
