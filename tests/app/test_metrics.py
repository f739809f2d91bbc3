"""Metrics merged across the server's worker processes (prometheus multiprocess mode)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_empty_worker_file_leaves_metrics_and_readiness_readable(tmp_path, monkeypatch):
    """A worker's metrics file exists at 0 bytes between its creation and its sizing, and stays so when
    the worker is killed in that moment (a just-forked replacement): /metrics and /readyz leave it out
    and still read every other worker's values."""
    worker = ("from app import metrics; metrics.mark_worker_loaded(); "
              "metrics.QUESTIONS.labels(model='memsizer').inc(3)")
    subprocess.run([sys.executable, "-c", worker], check=True, cwd=ROOT,
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    for name in ("counter_424242.db", "gauge_livesum_424242.db", "histogram_424242.db"):
        (tmp_path / name).touch()  # created, never sized
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from app import metrics
    loaded, started = metrics.server_readiness()
    assert (loaded, started) == (1, False)
    body, _ = metrics.render_metrics()
    assert b'placevalue_questions_answered_total{model="memsizer"} 3.0' in body
