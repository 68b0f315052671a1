"""Property-based run against /openapi.json (schemathesis strategies driven by hypothesis, bounded examples):
valid and invalid (negative) requests to every operation; no server error, responses match the documented
schemas, every error body carries a stable `error` code and a message."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from chatbot_model.server import create_app
from chatbot_model.server.backends import ServiceBackend
from tests.helpers import make_service, make_settings, tracking_store

MAX_EXAMPLES = 20
OPERATIONS = ["POST /chat", "POST /feedback", "GET /health", "GET /ready", "GET /metrics"]


@pytest.fixture(scope="module")
def api_schema(shipped_index, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    s = make_settings(shipped_index, tracking_store(tmp), tmp)
    backend = ServiceBackend(s, service=make_service(s))
    backend.load()  # the ASGI client runs no lifespan
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(s, backend=backend))


def _operation(schema, label: str):
    for result in schema.get_all_operations():
        op = result.ok()
        if op.label == label:
            return op
    raise AssertionError(f"{label} is not in /openapi.json")


def test_every_endpoint_is_documented(api_schema):
    labels = {r.ok().label for r in api_schema.get_all_operations()}
    assert set(OPERATIONS) <= labels


NEGATABLE = ["POST /chat", "POST /feedback", "GET /health"]  # operations with inputs that can be made invalid
CASES = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [(l, GenerationMode.NEGATIVE) for l in NEGATABLE]


@pytest.mark.parametrize("label, mode", CASES, ids=[f"{l} {m.value}" for l, m in CASES])
def test_no_server_error(api_schema, label, mode):
    operation = _operation(api_schema, label)
    seen = set()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call()
        seen.add(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"] and body.get("message"), body
        if mode is GenerationMode.POSITIVE and response.status_code < 400:
            case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])

    run()
    assert seen
