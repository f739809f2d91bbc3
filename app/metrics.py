"""Prometheus metrics; under gunicorn they aggregate across workers (multiprocess mode).

Metric objects are process-wide by the client library's design; gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before any worker imports this module.
"""
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY, multiprocess

REQUESTS = Counter("placevalue_requests", "HTTP requests by endpoint, backend and status",
                   ["endpoint", "model", "status"])
LATENCY = Histogram("placevalue_request_seconds", "Request latency by endpoint, backend and status",
                    ["endpoint", "model", "status"],
                    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
QUESTIONS = Counter("placevalue_questions_answered", "Questions answered by backend", ["model"])
ERRORS = Counter("placevalue_errors", "API errors by code", ["code"])
# livesum: the files of a worker that exits are dropped (gunicorn.conf.py's child_exit), so this
# counts the live workers that have loaded their backends
WORKERS_LOADED = Gauge("placevalue_workers_loaded", "Server workers whose required backends are loaded",
                       multiprocess_mode="livesum")
PASS_QUESTIONS = Histogram("placevalue_pass_questions", "Questions per batched forward pass by backend", ["model"],
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


def record_pass(model: str, questions: int) -> None:
    PASS_QUESTIONS.labels(model=model).observe(questions)


def mark_worker_loaded() -> None:
    WORKERS_LOADED.set(1)


def workers_loaded() -> int:
    """Live workers (this one included) that have loaded their required backends."""
    value = merged_registry().get_sample_value("placevalue_workers_loaded")
    return int(value or 0)


def merged_registry():
    """Every worker's metrics when running multiprocess, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render_metrics():
    """(body, content type) of all metrics, merged across workers when running multiprocess."""
    return generate_latest(merged_registry()), CONTENT_TYPE_LATEST
