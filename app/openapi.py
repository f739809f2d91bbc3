"""The OpenAPI 3.1 description of the JSON API: the schemas generated from the pydantic models of
app/schemas.py, with the registered backends and the app's limits filled in."""
from pydantic.json_schema import models_json_schema

from app.schemas import DOCUMENTED


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _schemas(backends, max_batch: int) -> dict:
    """Every documented model's JSON schema (requests as validated, responses as serialised)."""
    _, document = models_json_schema([(m, "validation") for m in DOCUMENTED],
                                     ref_template="#/components/schemas/{model}")
    schemas = document["$defs"]
    for schema in schemas.values():  # the backends are registered at run time
        if "model" in schema.get("properties", {}):
            schema["properties"]["model"]["enum"] = list(backends)
            schema["properties"]["model"].pop("default", None)  # absent, not null: the server's default
    schemas["BatchRequest"]["properties"]["questions"]["maxItems"] = max_batch
    return schemas


def _question_responses(config, ok: dict, bad_request: str, overloaded: str) -> dict:
    """The responses of an endpoint that answers questions: 200 `ok`, then the shared errors."""
    return {"200": ok,
            "400": _error(f"bad JSON, a missing, empty, too long or unencodable question, {bad_request}"),
            "413": _error(f"body over {config['MAX_CONTENT_LENGTH']} bytes"),
            "503": {**_error(f"the backend's checkpoint is not loaded (model_unavailable), or {overloaded} "
                             f"(overloaded)"),
                    "headers": {"Retry-After": {"description": "seconds; sent with overloaded",
                                                "schema": {"type": "integer", "minimum": 1}}}}}


def openapi_document(backends, config) -> dict:
    """The whole document; `backends` fills the model enums, `config` the batch limit."""
    json_object = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Place-value Q&A", "version": "1.0.0",
                 "description": "Answers DeepMind numbers__place_value questions with interchangeable "
                                "encoder-decoder backends; every answer carries an exact-answer check."},
        "paths": {
            "/answer": {"post": {
                "summary": "Answer one question or a batch (one batched pass) with one backend",
                "operationId": "answer",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [_ref("SingleRequest"), _ref("BatchRequest")]}}}},
                "responses": _question_responses(
                    config, _json({"oneOf": [_ref("SingleAnswer"), _ref("BatchAnswer")]}, "the answers, checked"),
                    "an unknown field or model, too many questions",
                    "the queue is full or the request waited past its bound")}},
            "/explain": {"post": {
                "summary": "Answer one question and attribute the answer to the question's characters",
                "operationId": "explain",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SingleRequest")}}},
                "responses": _question_responses(
                    config, _json(_ref("Explanation"), "the answer, checked, with per-character attributions"),
                    "an unknown field (one question only) or model",
                    "every explanation slot or the answer queue is busy")}},
            "/models": {"get": {"summary": "Every backend: readiness, size, checkpoint, accuracy per place",
                                "operationId": "models", "responses": {"200": _json(_ref("Models"), "the backends")}}},
            "/example": {"get": {"summary": "A freshly generated example question", "operationId": "example",
                                 "responses": {"200": _json(_ref("Example"), "a question")}}},
            "/healthz": {"get": {"summary": "The process is alive", "operationId": "healthz",
                                 "responses": {"200": _json(json_object, "alive")}}},
            "/readyz": {"get": {"summary": "Whether every required backend is loaded", "operationId": "readyz",
                                "responses": {"200": _json(json_object, "ready"),
                                              "503": _json(json_object, "a required backend is not loaded")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {
                    "type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": _json(json_object, "OpenAPI 3.1")}}},
        },
        "components": {"schemas": _schemas(backends, config["MAX_BATCH_QUESTIONS"])},
    }
