"""Flask application factory for the place-value Q&A service.

Configuration: DEFAULTS, then environment variables prefixed PLACEVALUE_ (e.g.
PLACEVALUE_CHECKPOINT_DIR, PLACEVALUE_DEFAULT_MODEL, PLACEVALUE_TORCH_THREADS,
PLACEVALUE_REQUIRED_MODELS, PLACEVALUE_DEVICE, PLACEVALUE_BATCH_MAX), then the `config`
mapping given to create_app.
"""
import logging
import re
import time
import uuid

from flask import Flask, g, request

DEFAULTS = {
    "CHECKPOINT_DIR": "checkpoints",
    "DEFAULT_MODEL": None,  # None: the registry's default backend
    "TORCH_THREADS": 1,
    "MAX_BATCH_QUESTIONS": 256,
    "MAX_CONTENT_LENGTH": 64 * 1024,  # bytes; Flask answers 413 above it
    # backends /readyz waits for, comma-separated; empty: every backend whose checkpoint ships
    "REQUIRED_MODELS": "",
    "DEVICE": "auto",  # auto: the GPU when torch sees one, else the CPU
    "RUNTIME": "torch",  # or torch-int8 / ctranslate2 / ctranslate2-int8 / auto (app/service.py)
    # cross-request micro-batching (app/batching.py): questions per pass (1: each request alone),
    # the longest a pass waits for more requests, whether it stops waiting once as many requests
    # wait as it had callers last time, the queue bound beyond which requests get 503, and how
    # long a request may wait for its pass to start before it gets 503
    "BATCH_MAX": 64,
    "BATCH_DELAY_MS": 2.0,
    "BATCH_EXPECT_CALLERS": True,
    "QUEUE_LIMIT": 256,
    "QUEUE_MAX_WAIT_MS": 2000.0,
    # processes serving this app (gunicorn.conf.py sets it). /readyz stays 503 until that many have
    # loaded their backends: /readyz answers from whichever worker a connection reaches, and clients
    # that connect while another worker is still loading all land on the loaded one and, kept alive,
    # stay there (benchmarks/ANALYSIS.md, "Where the connections land").
    "SERVER_WORKERS": 1,
}
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
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("PLACEVALUE")
    app.config.update(config or {})
    app.config["DEBUG"] = bool(app.config.get("DEBUG", False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from app.service import QAService  # torch is imported here, inside the worker, never at import time
    required = app.config["REQUIRED_MODELS"]
    required = [n.strip() for n in required.split(",") if n.strip()] if isinstance(required, str) else required
    expect_callers = app.config["BATCH_EXPECT_CALLERS"]
    if expect_callers not in (True, False):  # the environment gives JSON: true / false (or 1 / 0)
        raise ValueError(f"BATCH_EXPECT_CALLERS must be true or false, got {expect_callers!r}")
    batching = {"max_batch": int(app.config["BATCH_MAX"]), "max_delay_ms": float(app.config["BATCH_DELAY_MS"]),
                "queue_limit": int(app.config["QUEUE_LIMIT"]), "max_wait_ms": float(app.config["QUEUE_MAX_WAIT_MS"]),
                "expect_callers": bool(expect_callers)}
    service = QAService(app.config["CHECKPOINT_DIR"], app.config["TORCH_THREADS"], required,
                        device=str(app.config["DEVICE"]), batching=batching, runtime=str(app.config["RUNTIME"]))
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
