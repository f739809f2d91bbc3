"""Flask application factory for the place-value Q&A service.

Configuration: serving/settings.py's ServingSettings defaults, then environment variables prefixed
PLACEVALUE_ (e.g. PLACEVALUE_CHECKPOINT_DIR, PLACEVALUE_RUNTIME), then the `config` mapping given
to create_app.
"""
import logging
import re
import time
import uuid

from flask import Flask, g, request

from serving.settings import ServingSettings

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(config=None) -> Flask:
    """Build the app; loads every backend's checkpoint it finds into this process's QA service."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config.from_mapping(ServingSettings.flask_defaults())
    app.config.from_prefixed_env("PLACEVALUE")
    app.config.update(config or {})
    app.config["DEBUG"] = bool(app.config.get("DEBUG", False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ServingSettings.from_mapping(app.config)

    from app.metrics import record_pass
    from serving.service import QAService  # torch is imported here, inside the worker, never at import time
    required = [n.strip() for n in settings.required_models.split(",") if n.strip()]
    service = QAService(settings.checkpoint_dir, settings.threads_per_worker(), required, device=settings.device,
                        batching=settings.batching(), runtime=settings.runtime,
                        explain_concurrency=settings.explain_concurrency, on_pass=record_pass)
    app.config["DEFAULT_MODEL"] = app.config["DEFAULT_MODEL"] or service.default_backend
    if app.config["DEFAULT_MODEL"] not in service.backends:
        raise ValueError(f"DEFAULT_MODEL must be one of {service.backends}, got {app.config['DEFAULT_MODEL']!r}")
    app.extensions["qa_service"] = service
    if service.ready():
        from app.metrics import mark_worker_loaded
        mark_worker_loaded()

    from app import api, errors, pages
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    errors.register_error_handlers(app)
    register_request_hooks(app)
    return app


def register_request_hooks(app: Flask) -> None:
    from app.metrics import LATENCY, REQUESTS

    @app.before_request
    def start_request():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response):
        response.headers.update(SECURITY_HEADERS)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        labels = dict(endpoint=request.endpoint or "unmatched", model=g.get("model", ""),
                      status=str(response.status_code))
        REQUESTS.labels(**labels).inc()
        LATENCY.labels(**labels).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response
