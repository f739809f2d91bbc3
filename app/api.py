"""JSON API: POST /answer (single or batch), POST /explain, GET /models, /example, /healthz, /readyz, /metrics, /openapi.json."""
import json

from flask import Blueprint, current_app, g, jsonify, request

from app.errors import APIError
from app.metrics import ERRORS, QUESTIONS, mark_server_started, render_metrics, server_readiness
from app.openapi import openapi_document
from app.schemas import BatchAnswer, Explanation, RequestError, SingleAnswer, parse_question_request

bp = Blueprint("api", __name__)


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


def parse(batch_allowed: bool = True) -> tuple[list, str, bool]:
    """(questions, model, is_batch) from the body, as app/schemas.py declares it."""
    try:
        questions, model, is_batch = parse_question_request(
            read_json_body(), service().backends, current_app.config["DEFAULT_MODEL"],
            current_app.config["MAX_BATCH_QUESTIONS"], batch_allowed)
    except RequestError as err:
        fail(400, err.code, err.message)
    g.model = model
    return questions, model, is_batch


def answer_of(reply) -> SingleAnswer:
    return SingleAnswer(answer=reply.answer, check=reply.check, question=reply.question, submitted=reply.submitted,
                        model=reply.model, latency_ms=round(reply.latency_ms, 3))


@bp.post("/answer")
def answer():
    """Answer one question or a batch with the chosen backend, each answer checked."""
    questions, model, is_batch = parse()
    replies = service().respond(questions, model, batch=is_batch)
    QUESTIONS.labels(model=model).inc(len(replies))
    if not is_batch:
        return jsonify(answer_of(replies[0]).model_dump())
    return jsonify(BatchAnswer(answers=[r.answer for r in replies], checks=[r.check for r in replies],
                               questions=[r.question for r in replies], model=model, count=len(replies),
                               latency_ms=round(replies[0].latency_ms, 3)).model_dump())


@bp.post("/explain")
def explain():
    """One question, one backend: the answer, its check, and which characters the answer relied on."""
    (question,), model, _ = parse(batch_allowed=False)
    reply = service().explain(question, model)
    QUESTIONS.labels(model=model).inc()
    return jsonify(Explanation(**answer_of(reply).model_dump(), attribution=reply.attribution).model_dump())


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
