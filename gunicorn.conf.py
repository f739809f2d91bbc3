"""Gunicorn settings (serving/settings.py's GunicornSettings, each overridable by a GUNICORN_ variable).

gunicorn reads this file from the checkout whether or not `-c gunicorn.conf.py` is given, and its
command line wins over it (`gunicorn -w 3 wsgi:app` runs 3 workers). Torch state is never preloaded
across fork: every worker builds the app and loads the checkpoints itself, after post_fork has
told it how many workers the arbiter really runs (for /readyz and the torch threads per worker).
"""
import os
import shutil
import tempfile

from serving.settings import GunicornSettings

_settings = GunicornSettings()
bind = _settings.bind
workers = _settings.workers
threads = _settings.threads
worker_class = _settings.worker_class
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
reuse_port = _settings.reuse_port
accesslog = _settings.accesslog or None
preload_app = False

# prometheus-client aggregates metrics across workers through files in this directory; without
# one given, a temporary one, removed when the master exits. The marker is an environment
# variable because gunicorn re-reads this file on SIGHUP, after the directory exists.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="placevalue-metrics-")
    os.environ["PLACEVALUE_METRICS_DIR_IS_TEMPORARY"] = "1"


def post_fork(server, worker):
    """In the new worker, before it loads the app: the worker count the arbiter runs, whatever the
    command line or this file said (the app's torch threads default to cores / workers)."""
    os.environ["PLACEVALUE_SERVER_WORKERS"] = str(server.num_workers)


def on_exit(server):
    if os.environ.get("PLACEVALUE_METRICS_DIR_IS_TEMPORARY") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
    from app.balanced_worker import release
    release(worker)
