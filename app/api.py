"""JSON API: POST /answer (single or batch), POST /explain, GET /models, /example, /healthz, /readyz, /metrics, /openapi.json."""
import json

from flask import Blueprint, current_app, g, jsonify, request

from app.errors import APIError
from app.metrics import ERRORS, QUESTIONS, mark_server_started, render_metrics, server_readiness
from app.openapi import openapi_document

bp = Blueprint("api", __name__)
# A misspelt key (say "backend" for "model") would otherwise be answered by the default backend
# without a word, so every key outside these is refused.
ANSWER_REQUEST_FIELDS = ("question", "questions", "model")
EXPLAIN_REQUEST_FIELDS = ("question", "model")  # one question: an explanation costs many passes


def service():
    return current_app.extensions["qa_service"]


def fail(status: int, code: str, message: str):
    ERRORS.labels(code=code).inc()
    raise APIError(status, code, message)


def read_json_body():
    """The request body parsed as JSON, whatever its Content-Type, or a 400."""
    try:
        return json.loads(request.get_data(cache=True))
    # ValueError: malformed JSON, bad encodings, integers beyond Python's digit limit;
    # RecursionError: nesting deeper than the parser's stack (a few thousand '[')
    except (ValueError, RecursionError):
        fail(400, "invalid_json", "request body must be a JSON object")


def parse_answer_request(fields=ANSWER_REQUEST_FIELDS) -> tuple[list, str, bool]:
    """(questions, model, is_batch) from the JSON body, or an APIError; `fields` are those allowed."""
    body = read_json_body()
    if not isinstance(body, dict):
        fail(400, "invalid_request", f"request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(key for key in body if key not in fields)
    if unknown:
        fail(400, "unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                   f"a request has {', '.join(map(repr, fields))}")
    model = body.get("model", current_app.config["DEFAULT_MODEL"])
    if not isinstance(model, str) or model not in service().backends:
        fail(400, "unknown_model", f"model must be one of: {', '.join(service().backends)}")
    g.model = model
    if ("question" in body) == ("questions" in body):
        fail(400, "invalid_request", 'give exactly one of "question" (a string) or "questions" (a list)')
    if "question" in body:
        return [body["question"]], model, False
    questions, limit = body["questions"], current_app.config["MAX_BATCH_QUESTIONS"]
    if not isinstance(questions, list) or not questions:
        fail(400, "invalid_request", '"questions" must be a non-empty list of strings')
    if len(questions) > limit:
        fail(400, "too_many_questions", f"at most {limit} questions per request, got {len(questions)}")
    return questions, model, True


@bp.post("/answer")
def answer():
    """Answer one question or a batch with the chosen backend, each answer checked."""
    questions, model, is_batch = parse_answer_request()
    replies = service().respond(questions, model, batch=is_batch)
    QUESTIONS.labels(model=model).inc(len(replies))
    latency_ms = round(replies[0].latency_ms, 3)
    if is_batch:
        return jsonify(answers=[r.answer for r in replies], checks=[r.check for r in replies],
                       questions=[r.question for r in replies], model=model, count=len(replies), latency_ms=latency_ms)
    reply, = replies
    return jsonify(answer=reply.answer, check=reply.check, question=reply.question, submitted=reply.submitted,
                   model=model, latency_ms=latency_ms)


@bp.post("/explain")
def explain():
    """One question, one backend: the answer, its check, and which characters the answer relied on."""
    (question,), model, _ = parse_answer_request(EXPLAIN_REQUEST_FIELDS)
    reply = service().explain(question, model)
    QUESTIONS.labels(model=model).inc()
    return jsonify(answer=reply.answer, check=reply.check, question=reply.question, submitted=reply.submitted,
                   model=model, latency_ms=round(reply.latency_ms, 3), attribution=reply.attribution)


@bp.get("/models")
def models():
    """Each backend's readiness, size, architecture, checkpoint hash and accuracy per place."""
    return jsonify(models=service().describe(), default_model=current_app.config["DEFAULT_MODEL"])


@bp.get("/example")
def example():
    """A freshly generated example question."""
    return jsonify(question=service().example_question())


@bp.get("/healthz")
def healthz():
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when every required backend's checkpoint is loaded, here and, at start, in every worker;
    names what is missing."""
    qa = service()
    expected = int(current_app.config["SERVER_WORKERS"])
    loaded, started_elsewhere = server_readiness()
    # Once all workers have loaded (seen by any of them), readiness is each worker's own again: a
    # worker restarted later takes no connections before it has loaded, and the others serve meanwhile.
    if loaded >= expected:
        current_app.extensions["all_workers_loaded"] = True
        mark_server_started()
    started = current_app.extensions.get("all_workers_loaded", False) or started_elsewhere
    ready = qa.ready() and started
    body = {"ready": ready, "models": {name: qa.ready(name) for name in qa.backends},
            "required": list(qa.required), "errors": qa.load_errors,
            "workers": {"loaded": loaded, "expected": expected}}
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    body, content_type = render_metrics()
    return body, 200, {"Content-Type": content_type}


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of this API."""
    return jsonify(openapi_document(service().backends, current_app.config))
