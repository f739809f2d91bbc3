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
    with pytest.raises(ValueError, match="BATCH_EXPECT_CALLERS: Input should be a valid boolean"):
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


def test_one_set_of_serving_defaults_read_from_the_environment():
    """The app, gunicorn.conf.py and the batcher share ServingSettings' defaults; the environment
    overrides them as PLACEVALUE_ variables (JSON or plain strings)."""
    from serving.batching import MicroBatcher
    from serving.settings import ServingSettings
    defaults = ServingSettings()
    assert defaults.runtime == "auto" and defaults.torch_threads == 0
    env = ServingSettings.from_env({"PLACEVALUE_RUNTIME": "torch", "PLACEVALUE_BATCH_MAX": "8",
                                    "PLACEVALUE_BATCH_EXPECT_CALLERS": "false", "PLACEVALUE_SERVER_WORKERS": "3"})
    assert (env.runtime, env.batch_max, env.batch_expect_callers, env.server_workers) == ("torch", 8, False, 3)
    assert ServingSettings(server_workers=64).threads_per_worker() == 1
    batcher = MicroBatcher(lambda name, items: (items, 0.0))
    try:
        assert (batcher.max_batch, batcher.queue_limit) == (defaults.batch_max, defaults.queue_limit)
    finally:
        batcher.close()
    with pytest.raises(ValueError, match="BATCH_EXPECT_CALLERS: Input should be a valid boolean"):
        ServingSettings.from_mapping({"BATCH_EXPECT_CALLERS": "maybe"})
    # one parser for every process kind: "yes" means true to the app as to gunicorn.conf.py
    from serving.settings import GunicornSettings
    assert ServingSettings.from_env({"PLACEVALUE_BATCH_EXPECT_CALLERS": "yes"}).batch_expect_callers is True
    assert GunicornSettings(reuse_port="yes").reuse_port is True
