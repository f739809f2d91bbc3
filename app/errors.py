"""One JSON error shape for every API error: {"error": {"code", "message", "request_id"}}."""
import logging

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from app.metrics import ERRORS
from models.tokenizer import MAX_QUESTION_CHARS, QuestionError
from serving.batching import Overloaded
from serving.service import BackendUnavailable

log = logging.getLogger(__name__)

# HTTP status -> stable machine-readable code for errors raised by Flask/Werkzeug itself
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
              415: "unsupported_media_type", 500: "internal_error", 503: "unavailable"}


class APIError(Exception):
    """An error the client can act on; rendered as the JSON error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    body = {"error": {"code": code, "message": message, "request_id": g.get("request_id")}}
    return jsonify(body), status, headers or {}


def wants_html() -> bool:
    """Browsers navigating to a page get HTML errors; API clients always get JSON."""
    if request.path.startswith(("/answer", "/models", "/healthz", "/readyz", "/metrics", "/example", "/openapi")):
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def handle_api_error(err: APIError):
        return error_response(err.status, err.code, err.message, err.headers)

    # the service's refusals, raised wherever a request is answered
    @app.errorhandler(QuestionError)
    def handle_question_error(err: QuestionError):
        ERRORS.labels(code=err.code).inc()
        return error_response(400, err.code, err.message if err.index is None else f"questions[{err.index}]: {err.message}")

    @app.errorhandler(BackendUnavailable)
    def handle_unavailable(err: BackendUnavailable):
        ERRORS.labels(code="model_unavailable").inc()
        return error_response(503, "model_unavailable", str(err))

    @app.errorhandler(Overloaded)
    def handle_overloaded(err: Overloaded):
        ERRORS.labels(code="overloaded").inc()
        return error_response(503, "overloaded", f"{err}; retry in {err.retry_after} s",
                              {"Retry-After": str(err.retry_after)})

    @app.errorhandler(HTTPException)
    def handle_http_error(err: HTTPException):
        code = HTTP_CODES.get(err.code, "http_error")
        message = err.description or err.name
        if err.code == 413:
            message = f"request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
            if request.endpoint == "pages.ask":  # the form shows it next to the field, like any bad question
                from app.pages import render_form
                return render_form(error=f"Question is far too long (the limit is {MAX_QUESTION_CHARS} characters).",
                                   status=413)
        if wants_html():
            return render_template("error.html", status=err.code, message=message), err.code
        response, status, _ = error_response(err.code, code, message)
        if err.code == 405 and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response, status

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception):
        # logged with the request id server-side; the client gets the id, never the traceback
        log.exception("unhandled error (request %s)", g.get("request_id"))
        if wants_html():
            return render_template("error.html", status=500, message="internal error"), 500
        return error_response(500, "internal_error", "internal error; quote the request_id when reporting it")
