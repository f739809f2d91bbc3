"""Gunicorn settings, each overridable by an environment variable.

Torch state is never preloaded across fork (preload_app = False): every worker builds the
app and loads the checkpoints itself. Each worker runs its passes with PLACEVALUE_TORCH_THREADS
intra-op threads (default: cores // workers) on one dispatcher thread (app/batching.py), so
workers x torch threads never exceeds the cores however many request threads a worker has;
request threads mostly wait for their pass, hence many of them.
"""
import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# gunicorn's gthread worker, except that a worker holding more connections than a sibling leaves a
# new one to it (app/balanced_worker.py); GUNICORN_WORKER_CLASS=gthread runs gunicorn's own
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "app.balanced_worker.BalancedThreadWorker")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
preload_app = False
# Two alternatives to the balanced worker, measured as no better here (benchmarks/ANALYSIS.md,
# "Where the connections land"): keep-alive 0 (a connection per request, each a new race: 12-22%
# fewer answers/s at 4 clients) and a socket per worker (SO_REUSEPORT: placement by address hash,
# 4 clients on one worker in 2 of 12 runs).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "2"))
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "false").lower() in ("1", "true", "yes")
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # empty: no access log

os.environ["PLACEVALUE_SERVER_WORKERS"] = str(workers)  # /readyz waits until each has loaded its backends
os.environ.setdefault("PLACEVALUE_TORCH_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
# the fastest runtime measured per backend that keeps every stored accuracy (benchmarks/RESULTS.md,
# sections 4-4c): "auto" serves the Transformer on CTranslate2 and the backends it cannot express on
# torch, each in int8 where the checkpoint stores evaluations on this CPU's int8 kernel class that
# keep every in-distribution place (CPUs with AVX-512 VNNI, AVX-VNNI or AMX: the Transformer on
# CTranslate2 int8, MemSizer and the Performer on torch int8), in float32 elsewhere (AVX2's int8
# answers 90% of interpolate questions: its kernel's arithmetic, not the rounding; section 4c).
# PLACEVALUE_RUNTIME=ctranslate2 / ctranslate2-int8 / torch-int8 pins one, torch serves all in float32.
os.environ.setdefault("PLACEVALUE_RUNTIME", "auto")
# prometheus-client aggregates metrics across workers through files in this directory; without
# one given, a temporary one, removed when the master exits. The marker is an environment
# variable because gunicorn re-reads this file on SIGHUP, after the directory exists.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="placevalue-metrics-")
    os.environ["PLACEVALUE_METRICS_DIR_IS_TEMPORARY"] = "1"


def on_exit(server):
    if os.environ.get("PLACEVALUE_METRICS_DIR_IS_TEMPORARY") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
    from app.balanced_worker import release
    release(worker)

