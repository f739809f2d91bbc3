"""GET /openapi.json is a valid OpenAPI 3 document, and real responses validate against it."""
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from tests.conftest import BACKENDS

Q = "What is the tens digit of 89290?"


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def check_against(spec, path, method, status, body):
    """Validate one response body against the document's schema for it (references resolved)."""
    schema = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": spec["components"]}).validate(body)


def test_document_is_valid_openapi(spec):
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["components"]["schemas"]["SingleRequest"]["properties"]["model"]["enum"] == list(BACKENDS)
    for path in ("/answer", "/explain", "/models", "/example", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert path in spec["paths"]


@pytest.mark.parametrize("body", [{"question": Q}, {"question": "hello there", "model": BACKENDS[-1]},
                                  {"questions": [Q, "What is the hundreds digit of 7?"]}])
def test_answers_validate(client, spec, body):
    response = client.post("/answer", json=body)
    check_against(spec, "/answer", "post", 200, response.json)


@pytest.mark.parametrize("body, status", [(b"[" * 3000, 400), (b'{"question": ""}', 400),
                                          (b'{"question": "' + b"1" * 5000 + b'"}', 413)])
def test_errors_validate(client, spec, body, status):
    response = client.post("/answer", data=body, content_type="application/json")
    assert response.status_code == status
    check_against(spec, "/answer", "post", status, response.json)


def test_models_and_example_validate(client, spec):
    check_against(spec, "/models", "get", 200, client.get("/models").json)
    check_against(spec, "/example", "get", 200, client.get("/example").json)


def test_a_wrong_response_would_fail_validation(spec):
    from jsonschema.exceptions import ValidationError
    with pytest.raises(ValidationError):
        check_against(spec, "/answer", "post", 200, {"answer": "9", "model": BACKENDS[0], "latency_ms": 1.0})
