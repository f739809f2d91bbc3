"""JSON API: POST /answer (single or batch), GET /models, /example, /healthz, /readyz, /metrics."""
from flask import Blueprint, current_app, g, jsonify, request

from app.errors import APIError
from app.metrics import ERRORS, QUESTIONS, render_metrics
from app.service import BackendUnavailable

bp = Blueprint("api", __name__)


def service():
    return current_app.extensions["qa_service"]


def fail(status: int, code: str, message: str):
    ERRORS.labels(code=code).inc()
    raise APIError(status, code, message)


def check_question(question, where: str = "question") -> None:
    """400 with a specific code for each way a question can be unusable."""
    if not isinstance(question, str):
        fail(400, "invalid_type", f"{where} must be a string, got {type(question).__name__}")
    try:
        service().validate(question)
    except ValueError as err:
        message = str(err)
        code = ("empty_question" if "empty" in message else
                "question_too_long" if "limit is" in message else "invalid_character")
        fail(400, code, message.replace("question", where, 1))


def parse_answer_request() -> tuple[list[str], str, bool]:
    """(questions, model, is_batch) from the JSON body, or an APIError."""
    body = request.get_json(force=True, silent=True)
    if body is None:
        fail(400, "invalid_json", "request body must be a JSON object")
    if not isinstance(body, dict):
        fail(400, "invalid_request", f"request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model", current_app.config["DEFAULT_MODEL"])
    if not isinstance(model, str) or model not in service().backends:
        fail(400, "unknown_model", f"model must be one of: {', '.join(service().backends)}")
    g.model = model
    if ("question" in body) == ("questions" in body):
        fail(400, "invalid_request", 'give exactly one of "question" (a string) or "questions" (a list)')
    if "question" in body:
        check_question(body["question"])
        return [body["question"]], model, False
    questions, limit = body["questions"], current_app.config["MAX_BATCH_QUESTIONS"]
    if not isinstance(questions, list) or not questions:
        fail(400, "invalid_request", '"questions" must be a non-empty list of strings')
    if len(questions) > limit:
        fail(400, "too_many_questions", f"at most {limit} questions per request, got {len(questions)}")
    for i, question in enumerate(questions):
        check_question(question, f"questions[{i}]")
    return questions, model, True


@bp.post("/answer")
def answer():
    """Answer one question or a batch with the chosen backend."""
    questions, model, is_batch = parse_answer_request()
    try:
        answers, latency_ms = service().answer(questions, model)
    except BackendUnavailable as err:
        fail(503, "model_unavailable", f"the {model} backend is not loaded: {err}")
    QUESTIONS.labels(model=model).inc(len(questions))
    if is_batch:
        return jsonify(answers=answers, model=model, count=len(answers), latency_ms=round(latency_ms, 3))
    return jsonify(answer=answers[0], question=questions[0], model=model, latency_ms=round(latency_ms, 3))


@bp.get("/models")
def models():
    """Each backend's readiness, size, architecture, checkpoint hash and accuracy."""
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
    """200 only when every backend's checkpoint is loaded."""
    qa = service()
    body = {"ready": qa.ready(), "models": {row["name"]: row["ready"] for row in qa.describe()},
            "errors": qa.load_errors}
    return jsonify(body), 200 if qa.ready() else 503


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    body, content_type = render_metrics()
    return body, 200, {"Content-Type": content_type}
