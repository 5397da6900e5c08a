"""The OpenAPI document matches the implementation: same routes and methods, and what answers fits it.

schemathesis generates requests for every operation from the document (bounded: 25 examples each,
derandomized so a run is repeatable) and sends them through the WSGI app with a valid token over
a database holding deployed processes, instances and open tasks, so ids it picks often exist.
Every answer must be no 5xx, have a documented status and content type, carry the documented
headers, and match the documented schema.
"""

from __future__ import annotations

import re

import hypothesis
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.internal.conjecture import utils as cu
from hypothesis.strategies import SearchStrategy
from schemathesis import experimental
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi import definitions

from engine import Engine
from engine.directory import grant
from tests.api_helpers import APPLICATION, APPROVAL, SCORING, as_user, token_for, with_api
from web.api.document import document

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every rule
EXAMPLES = 25  # per operation: enough to find shape mismatches, bounded so the test stays fast


@pytest.fixture
def app(web_app: Flask) -> Flask:
    return with_api(web_app)


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule).removeprefix("/api/v1")


def test_every_route_is_documented_with_its_methods_and_nothing_else(app: Flask) -> None:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            assert rule.endpoint.startswith("api."), f"{rule.rule} is not served by the API blueprint"
            routes.setdefault(_flask_path(rule.rule), set()).update((rule.methods or set()) - IGNORED_METHODS)
    documented = {path: {m.upper() for m in ops} for path, ops in document()["paths"].items()}
    assert routes == documented
    assert {
        "/definitions",
        "/instances",
        "/instances/{instance_id}",
        "/instances/{instance_id}/audit",
        "/tasks",
        "/tasks/{task_id}",
        "/tasks/{task_id}/claim",
        "/tasks/{task_id}/unclaim",
        "/tasks/{task_id}/complete",
        "/messages",
        "/audit/verify",
        "/openapi.json",
    } == set(documented)


def test_the_served_document_is_valid_openapi_3_1(app: Flask) -> None:
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.is_json
    served = response.get_json()
    assert served == document() and served["openapi"].startswith("3.1")
    definitions.OPENAPI_31_VALIDATOR.validate(served)
    # every operation but the document itself needs the bearer token, and says it can answer 401
    for path, operations in served["paths"].items():
        for method, spec in operations.items():
            if path == "/openapi.json":
                assert spec["security"] == [] and "401" not in spec["responses"]
            else:
                assert "security" not in spec and "401" in spec["responses"], (method, path)


def _seed(app: Flask, engine: Engine) -> str:
    """Processes, instances and open tasks for the fuzzer to hit; a token allowed to do everything."""
    with engine.db.write() as s:
        for role in ("designer", "auditor", "branch_secretary", "review_committee"):
            grant(s, "office", "HQ", role)
    office = as_user(app, engine, "office")
    assert office.deploy(*APPROVAL).status_code == 201
    assert office.deploy(*SCORING).status_code == 201
    sec1 = as_user(app, engine, "sec1")
    for _ in range(3):
        made = sec1.post("/instances", {"process": "approval", "org": "B1"}).get_json()
        sec1.post(f"/tasks/{made['open_tasks'][0]['id']}/complete", {"data": APPLICATION})
    office.post("/instances", {"process": "scoring", "org": "HQ", "data": {"judges": ["office", "judge1"]}})
    return token_for(engine, "office")


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    app: Flask, engine: Engine
) -> None:
    assert hasattr(cu.many, "more"), (
        f"hypothesis {hypothesis.__version__} dropped an internal that hypothesis-jsonschema 0.23 "
        "(schemathesis 3.x) needs: pin hypothesis<6.170.10"
    )
    experimental.OPEN_API_3_1.enable()
    token = _seed(app, engine)
    schema = schemathesis.from_dict(document(), app=app, validate_schema=True)
    statuses: dict[str, set[int]] = {}

    def run(strategy: SearchStrategy[schemathesis.Case]) -> None:
        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            statuses.setdefault(case.operation.verbose_name, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        call()

    for result in schema.get_all_operations():
        operation = result.ok()
        for strategy in [operation.as_strategy(), *schema.get_strategies_from_examples(operation)]:
            run(strategy)
    assert len(statuses) == 14, statuses
    # the run reached the happy paths too, not only refusals
    for name in (
        "POST /api/v1/instances",
        "GET /api/v1/tasks/{task_id}",
        "GET /api/v1/instances/{instance_id}",
    ):
        assert {200, 201} & statuses[name], (name, statuses[name])
    assert 422 in statuses["POST /api/v1/definitions"], statuses["POST /api/v1/definitions"]
