"""The factory: defaults, environment, overrides; one service per app; a backend may be missing."""
import shutil

import pytest

from app import create_app
from models import registry


def test_defaults_env_and_overrides(tiny_checkpoints, monkeypatch):
    monkeypatch.setenv("PLACEVALUE_DEFAULT_MODEL", "transformer")
    monkeypatch.setenv("PLACEVALUE_MAX_BATCH_QUESTIONS", "3")
    app = create_app({"CHECKPOINT_DIR": str(tiny_checkpoints)})
    assert app.config["DEFAULT_MODEL"] == "transformer" and app.config["MAX_BATCH_QUESTIONS"] == 3
    assert app.config["DEBUG"] is False
    assert create_app({"CHECKPOINT_DIR": str(tiny_checkpoints), "DEFAULT_MODEL": "memsizer"}).config["DEFAULT_MODEL"] == "memsizer"


@pytest.mark.parametrize("value, expected", [("false", False), ("true", True)])
def test_batching_expectation_comes_from_the_environment(tiny_checkpoints, monkeypatch, value, expected):
    monkeypatch.setenv("PLACEVALUE_BATCH_EXPECT_CALLERS", value)
    monkeypatch.setenv("PLACEVALUE_BATCH_DELAY_MS", "7")
    batcher = create_app({"CHECKPOINT_DIR": str(tiny_checkpoints)}).extensions["qa_service"].batcher
    assert batcher.expect_callers is expected and batcher.max_delay == 0.007


def test_a_batching_expectation_that_is_not_a_boolean_is_refused(tiny_checkpoints, monkeypatch):
    monkeypatch.setenv("PLACEVALUE_BATCH_EXPECT_CALLERS", "sometimes")
    with pytest.raises(ValueError, match="BATCH_EXPECT_CALLERS must be true or false"):
        create_app({"CHECKPOINT_DIR": str(tiny_checkpoints)})


def test_unknown_default_model_is_refused(tiny_checkpoints):
    with pytest.raises(ValueError, match="DEFAULT_MODEL"):
        create_app({"CHECKPOINT_DIR": str(tiny_checkpoints), "DEFAULT_MODEL": "gpt"})


def test_each_app_has_its_own_loaded_service(tiny_checkpoints):
    one = create_app({"CHECKPOINT_DIR": str(tiny_checkpoints)})
    two = create_app({"CHECKPOINT_DIR": str(tiny_checkpoints)})
    assert one.extensions["qa_service"] is not two.extensions["qa_service"]
    assert one.extensions["qa_service"].ready()


def test_readyz_waits_until_every_server_worker_has_loaded(tiny_checkpoints):
    # one process, told that two serve: the other has not loaded (under gunicorn the count is shared)
    waiting = create_app({"CHECKPOINT_DIR": str(tiny_checkpoints), "SERVER_WORKERS": 2}).test_client().get("/readyz")
    assert waiting.status_code == 503 and waiting.json["ready"] is False
    assert waiting.json["workers"] == {"loaded": 1, "expected": 2}
    assert all(waiting.json["models"].values()), "its own backends are loaded"
    alone = create_app({"CHECKPOINT_DIR": str(tiny_checkpoints), "SERVER_WORKERS": 1}).test_client().get("/readyz")
    assert alone.status_code == 200 and alone.json["workers"] == {"loaded": 1, "expected": 1}


def test_missing_backend_degrades_to_503(tiny_checkpoints, tmp_path):
    shutil.copytree(tiny_checkpoints / "transformer", tmp_path / "transformer")
    client = create_app({"CHECKPOINT_DIR": str(tmp_path)}).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["models"] == {name: name == "transformer" for name in registry.names()}
    assert "memsizer" in ready.json["errors"]
    down = client.post("/answer", json={"question": "What is the tens digit of 12?", "model": "memsizer"})
    assert down.status_code == 503 and down.json["error"]["code"] == "model_unavailable"
    up = client.post("/answer", json={"question": "What is the tens digit of 12?", "model": "transformer"})
    assert up.status_code == 200


def test_checkpoint_of_the_wrong_backend_is_not_served(tiny_checkpoints, tmp_path):
    shutil.copytree(tiny_checkpoints / "transformer", tmp_path / "memsizer")
    shutil.copytree(tiny_checkpoints / "transformer", tmp_path / "transformer")
    service = create_app({"CHECKPOINT_DIR": str(tmp_path)}).extensions["qa_service"]
    assert not service.ready("memsizer") and "not 'memsizer'" in service.load_errors["memsizer"]


def test_the_server_config_defaults_to_the_fastest_measured_runtime_and_env_overrides_it():
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    probe = ("import os, runpy; runpy.run_path('gunicorn.conf.py'); print(os.environ['PLACEVALUE_RUNTIME']); "
             "import shutil; os.environ.get('PLACEVALUE_METRICS_DIR_IS_TEMPORARY') == '1' and "
             "shutil.rmtree(os.environ['PROMETHEUS_MULTIPROC_DIR'])")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLACEVALUE_", "PROMETHEUS_"))}
    run = lambda env: subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True,
                                     text=True, check=True).stdout.strip()
    assert run(clean) == "auto"
    assert run({**clean, "PLACEVALUE_RUNTIME": "torch"}) == "torch"
