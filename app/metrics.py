"""Prometheus metrics; under gunicorn they aggregate across workers (multiprocess mode).

Metric objects are process-wide by the client library's design; gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before any worker imports this module.
"""
import glob
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
# Set by whichever worker first sees every worker loaded; "max" files outlive their process, so a
# survivor that never served /readyz itself still knows, after a sibling that did was killed. The
# label keeps a metrics directory reused across server runs from carrying the flag over.
SERVER_STARTED = Gauge("placevalue_server_started", "1 once every server worker had loaded its backends",
                       ["master_pid"], multiprocess_mode="max")
PASS_QUESTIONS = Histogram("placevalue_pass_questions", "Questions per batched forward pass by backend", ["model"],
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


# the time each pass computes; with the pass sizes it tells a server's per-question cost apart
# from its idle time (benchmarks.http_load compares both with the same passes in process)
PASS_SECONDS = Histogram("placevalue_pass_seconds", "Seconds per batched forward pass by backend", ["model"],
                         buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
# the dispatcher thread's CPU time in those passes: below their wall time, the pass waited for
# the GIL or for a core
PASS_CPU_SECONDS = Counter("placevalue_pass_cpu_seconds", "CPU seconds of the thread running the passes, by backend",
                           ["model"])


def record_pass(model: str, questions: int, seconds: float, cpu_seconds: float | None) -> None:
    """cpu_seconds None: the pass computed on another thread (an engine's own), not counted."""
    PASS_QUESTIONS.labels(model=model).observe(questions)
    PASS_SECONDS.labels(model=model).observe(seconds)
    if cpu_seconds is not None:
        PASS_CPU_SECONDS.labels(model=model).inc(max(0.0, cpu_seconds))


def mark_worker_loaded() -> None:
    WORKERS_LOADED.set(1)


def mark_server_started() -> None:
    SERVER_STARTED.labels(master_pid=str(os.getppid())).set(1)


def server_readiness() -> tuple[int, bool]:
    """(live workers, this one included, that have loaded their required backends; whether any
    worker of this server has seen every worker loaded), from one read of the shared files. Only
    a multiprocess server has siblings: in a single process the app's own record is the answer to
    the second, so it says False there."""
    registry = merged_registry()
    loaded = int(registry.get_sample_value("placevalue_workers_loaded") or 0)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return loaded, False
    started = registry.get_sample_value("placevalue_server_started", {"master_pid": str(os.getppid())})
    return loaded, bool(started)


class SizedFilesCollector:
    """The library's multiprocess merge over the workers' files, less the empty ones. A worker creates
    its file before sizing it, so for a moment it holds 0 bytes, and the library's reader fails on
    it, taking /metrics and /readyz down with it; a worker killed in that moment (a replaced one
    just forked) leaves it so for good (prometheus/client_python#1199). An empty file holds
    nothing recorded yet, so leaving it out changes no value."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        return multiprocess.MultiProcessCollector.merge(sized_files(self.path), accumulate=True)


def sized_files(path: str) -> list[str]:
    files = []
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            if os.path.getsize(name) > 0:
                files.append(name)
        except FileNotFoundError:  # a dead worker's live gauge, dropped since the glob (child_exit)
            pass
    return files


def merged_registry():
    """Every worker's metrics when running multiprocess, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        registry.register(SizedFilesCollector(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
        return registry
    return REGISTRY


def render_metrics():
    """(body, content type) of all metrics, merged across workers when running multiprocess."""
    return generate_latest(merged_registry()), CONTENT_TYPE_LATEST
