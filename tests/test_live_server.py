"""Real gunicorn on loopback, called over HTTP with requests."""
import pytest
import requests

from models import registry

pytestmark = pytest.mark.slow
Q = "What is the tens digit of 89290?"


def test_single_and_batch_answers(live_server):
    url = live_server["url"]
    for model in ("transformer", "memsizer"):
        single = requests.post(url + "/answer", json={"question": Q, "model": model}, timeout=10)
        assert single.status_code == 200 and single.json()["model"] == model
        batch = requests.post(url + "/answer", json={"questions": [Q, Q, "What is the units digit of 7?"],
                                                    "model": model}, timeout=10)
        assert batch.status_code == 200 and batch.json()["count"] == 3
        assert batch.json()["answers"][0] == single.json()["answer"]


def test_bad_input_and_body_limit(live_server):
    url = live_server["url"]
    bad = requests.post(url + "/answer", data=b"{oops", headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    deep = requests.post(url + "/answer", data=b"[" * 4000, headers={"Content-Type": "application/json"}, timeout=10)
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "invalid_json"
    big = requests.post(url + "/answer", data=b'{"question": "' + b"1" * 10000 + b'"}',
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert requests.get(url + "/nowhere", timeout=10).json()["error"]["code"] == "not_found"


def test_metrics_aggregate_across_workers(live_server):
    url = live_server["url"]
    for _ in range(6):
        requests.post(url + "/answer", json={"question": Q, "model": "memsizer"}, timeout=10)
    text = requests.get(url + "/metrics", timeout=10).text
    line = next(l for l in text.splitlines() if l.startswith('placevalue_questions_answered_total{model="memsizer"}'))
    assert float(line.split()[-1]) >= 6


def test_models_and_health(live_server):
    url = live_server["url"]
    assert requests.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
    rows = requests.get(url + "/models", timeout=10).json()["models"]
    assert [r["name"] for r in rows] == list(registry.names())
    assert all(r["ready"] for r in rows), "every backend has a (tiny) checkpoint here"
    # ready was awaited, so both workers have loaded, whichever of them answers
    for _ in range(4):
        ready = requests.get(url + "/readyz", timeout=10, headers={"Connection": "close"})
        assert ready.status_code == 200 and ready.json()["workers"] == {"loaded": 2, "expected": 2}
    assert "placevalue_workers_loaded 2.0" in requests.get(url + "/metrics", timeout=10).text


@pytest.mark.parametrize("given", [True, False], ids=["metrics-dir-given", "metrics-dir-temporary"])
def test_metrics_directory_is_not_leaked(tiny_checkpoints, tmp_path, given):
    """A given PROMETHEUS_MULTIPROC_DIR is used as is; without one, gunicorn makes a temporary
    directory for the metrics and removes it when it exits (one used to be left per start)."""
    from tests.conftest import start_gunicorn
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    metrics = str(tmp_path / "metrics") if given else ""
    if given:
        (tmp_path / "metrics").mkdir()
    process, url, log = start_gunicorn(tiny_checkpoints, tmp_path, TMPDIR=str(scratch), PROMETHEUS_MULTIPROC_DIR=metrics)
    try:
        assert requests.post(url + "/answer", json={"question": Q}, timeout=10).status_code == 200
        assert "placevalue_questions_answered_total" in requests.get(url + "/metrics", timeout=10).text
        made = list(scratch.glob("placevalue-metrics-*"))
        assert len(made) == (0 if given else 1)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()
    assert not list(scratch.glob("placevalue-metrics-*"))
    if given:
        assert any((tmp_path / "metrics").iterdir())  # the workers' metric files went where we said


def test_nothing_is_written_into_the_checkout(live_server):
    """Metrics files and logs go to temporary directories, never into the repository."""
    from pathlib import Path
    requests.get(live_server["url"] + "/metrics", timeout=10)
    root = Path(__file__).resolve().parent.parent
    assert not list(root.glob("*.db")) and not list(root.glob("*.log"))
