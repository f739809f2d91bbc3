"""The OpenAPI 3.1 description of the JSON API, built from the registered backends and the app's limits."""
from models.attribution import METHODS
from models.runtimes import RUNTIMES
from models.tokenizer import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS

ERROR_CODES = ("invalid_json", "invalid_request", "invalid_type", "empty_question", "question_too_long",
               "invalid_character", "unknown_field", "unknown_model", "too_many_questions", "not_found",
               "method_not_allowed", "body_too_large", "model_unavailable", "overloaded", "unsupported_media_type",
               "bad_request", "http_error", "unavailable", "internal_error")
REASON_CODES = ("not_task_form", "unknown_place_name", "irregular_wording", "leading_zeros", "number_too_long",
                "place_unseen", "place_rare", "place_beyond_number")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _schemas(backends, max_batch: int) -> dict:
    model = {"type": "string", "enum": list(backends), "description": "the backend; the server's default if omitted"}
    question = {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS,
                "description": "space plus printable ASCII letters, digits and punctuation",
                "example": "What is the tens digit of 89290?"}
    answer = {"type": "string", "maxLength": MAX_ANSWER_CHARS}
    asked = {"type": "string", "description": "the question as the backend was asked it: the trained wording "
                                              "(capitals, runs of spaces and thousands separators mapped to it)"}
    return {
        "SingleRequest": {"type": "object", "required": ["question"], "additionalProperties": False,
                          "properties": {"question": question, "model": model}},
        "BatchRequest": {"type": "object", "required": ["questions"], "additionalProperties": False,
                         "properties": {"questions": {"type": "array", "items": question, "minItems": 1,
                                                      "maxItems": max_batch}, "model": model}},
        "Explanation": {"type": "object", "additionalProperties": False,
                        "required": ["answer", "check", "question", "submitted", "model", "latency_ms", "attribution"],
                        "properties": {"answer": answer, "check": _ref("Check"), "question": asked,
                                       "submitted": {"type": "string", "description": "the question as sent"},
                                       "model": model, "latency_ms": {"type": "number", "minimum": 0},
                                       "attribution": _ref("Attribution")}},
        "Attribution": {
            "type": "object", "additionalProperties": False,
            "required": ["characters", "scores", "method", "target", "baseline", "steps", "samples",
                         "explained_change", "completeness_gap", "complete", "word_scores", "occlusion",
                         "computed_on", "served_by"],
            "description": "per-character attributions of the answer by a method valid for the backend",
            "properties": {"characters": {"type": "array", "items": {"type": "string", "minLength": 1,
                                                                     "maxLength": 1}},
                           "scores": {"type": "array", "items": {"type": "number"},
                                      "description": "the method's score per character; they add up to "
                                                     "explained_change within completeness_gap"},
                           "method": {"type": "string", "enum": list(METHODS),
                                      "description": "integrated_gradients where gradients see the model, "
                                                     "shapley_value_sampling where hashing hides it from them"},
                           "target": {"type": "string"}, "baseline": {"type": "string"},
                           "steps": {"type": ["integer", "null"], "minimum": 1,
                                     "description": "Integrated Gradients' steps; null for the other method"},
                           "samples": {"type": ["integer", "null"], "minimum": 1,
                                       "description": "Shapley value sampling's permutations; null for the other"},
                           "explained_change": {"type": "number",
                                                "description": "the target at the question less at the baseline"},
                           "completeness_gap": {"type": "number", "minimum": 0,
                                                "description": "|sum of scores - explained_change| / |explained_change|"},
                           "complete": {"type": "boolean", "description": "completeness gap within 5%"},
                           "word_scores": {"type": ["array", "null"], "items": {"type": "number"},
                                           "description": "the words' occlusion scores where the method leaves "
                                                          "the words out of its sum (Integrated Gradients)"},
                           "occlusion": {"type": "array", "items": {"type": "number"},
                                         "description": "cross-check: the change when each digit or word is "
                                                        "blanked alone, spread over its characters"},
                           "computed_on": {"type": "string", "description": "always the torch float32 model"},
                           "served_by": {"type": "string", "enum": list(RUNTIMES),
                                         "description": "the runtime that produced the answer"}}},
        "Reason": {"type": "object", "required": ["code", "message"], "additionalProperties": False,
                   "properties": {"code": {"type": "string", "enum": list(REASON_CODES)},
                                  "message": {"type": "string"}}},
        "Check": {"type": "object", "additionalProperties": False,
                  "required": ["expected", "correct", "in_distribution", "reasons"],
                  "description": "the exact answer computed in code, whether the backend got it, and why the "
                                 "question lies outside the training distribution (no reasons: inside it)",
                  "properties": {"expected": {"type": ["string", "null"],
                                              "description": "null when the question is not the task's form"},
                                 "correct": {"type": ["boolean", "null"]},
                                 "in_distribution": {"type": "boolean"},
                                 "reasons": {"type": "array", "items": _ref("Reason")}}},
        "SingleAnswer": {"type": "object", "additionalProperties": False,
                         "required": ["answer", "check", "question", "submitted", "model", "latency_ms"],
                         "properties": {"answer": answer, "check": _ref("Check"), "question": asked,
                                        "submitted": {"type": "string", "description": "the question as sent"},
                                        "model": model, "latency_ms": {"type": "number", "minimum": 0}}},
        "BatchAnswer": {"type": "object", "additionalProperties": False,
                        "required": ["answers", "checks", "questions", "model", "count", "latency_ms"],
                        "properties": {"answers": {"type": "array", "items": answer},
                                       "questions": {"type": "array", "items": asked},
                                       "checks": {"type": "array", "items": _ref("Check")}, "model": model,
                                       "count": {"type": "integer", "minimum": 1},
                                       "latency_ms": {"type": "number", "minimum": 0}}},
        "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                  "properties": {"error": {
                      "type": "object", "required": ["code", "message", "request_id"], "additionalProperties": False,
                      "properties": {"code": {"type": "string", "enum": list(ERROR_CODES)},
                                     "message": {"type": "string"},
                                     "request_id": {"type": ["string", "null"]}}}}},
        "Model": {"type": "object", "required": ["name", "display_name", "ready", "shipped", "train_command"],
                  "properties": {"name": {"type": "string"}, "display_name": {"type": "string"},
                                 "paper": {"type": "string"}, "summary": {"type": "string"},
                                 "ready": {"type": "boolean"}, "shipped": {"type": "boolean"},
                                 "required": {"type": "boolean"}, "train_command": {"type": "string"},
                                 "runtime": {"type": ["string", "null"], "enum": [*RUNTIMES, None],
                                             "description": "what runs its passes; null when not loaded"},
                                 "runtime_label": {"type": ["string", "null"], "description": "the runtime, for people"},
                                 "configuration": {"type": ["string", "null"], "description": "how its checkpoint's "
                                                   "settings build the backend, and where they differ from its "
                                                   "authors' defaults"},
                                 "error": {"type": ["string", "null"]},
                                 "parameters": {"type": "integer"}, "architecture": {
                                     "type": "object", "description": "layers, widths, the backend's own settings, and "
                                     "positions: source (absolute sinusoids counted from the number's start or end), "
                                     "digits (abacus place embeddings or none), relative (attention biases: none, "
                                     "rope or alibi)"},
                                 "checkpoint_sha256": {"type": "string"}, "checkpoint_bytes": {"type": "integer"},
                                 "weights_format": {"type": "string"}, "training_steps": {"type": ["integer", "null"]},
                                 "training_balanced_share": {
                                     "type": "number", "description": "share of place-balanced questions in its "
                                     "training batches (recorded recipe); the answer check's place_rare uses it"},
                                 "accuracy": {"type": "object", "additionalProperties": {"type": "number"}},
                                 "interpolate_accuracy": {"type": ["number", "null"]},
                                 "reliability": {"type": "object", "description": "per split (interpolate, train, "
                                                 "extrapolate): the recorded evaluation's accuracy per place name",
                                                 "additionalProperties": _ref("Reliability")}}},
        "Reliability": {"type": "object", "required": ["evaluation", "accuracy", "total", "per_place"],
                        "properties": {"evaluation": {"type": "string"}, "accuracy": {"type": "number"},
                                       "runtime": {"type": "string", "description": "what answered during the evaluation"},
                                       "int8_kernel": {"type": ["string", "null"], "description": "for an int8 "
                                                       "evaluation, the int8 kernel class it ran on: vnni (a CPU "
                                                       "with a dot-product instruction), avx2, other, or the GPU"},
                                       "total": {"type": "integer"},
                                       "per_place": {"type": "object", "additionalProperties": {"type": "number"}},
                                       "per_place_total": {"type": "object",
                                                           "additionalProperties": {"type": "integer"}}}},
    }


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
                                "operationId": "models", "responses": {"200": _json({
                                    "type": "object", "required": ["models", "default_model"],
                                    "properties": {"models": {"type": "array", "items": _ref("Model")},
                                                   "default_model": {"type": "string"}}}, "the backends")}}},
            "/example": {"get": {"summary": "A freshly generated example question", "operationId": "example",
                                 "responses": {"200": _json({"type": "object", "required": ["question"],
                                                             "properties": {"question": {"type": "string"}}},
                                                            "a question")}}},
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
