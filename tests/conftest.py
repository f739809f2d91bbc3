"""Shared fixtures: a tokenizer and tiny float32 configs of every registered backend."""
import pytest
import torch

from models import registry
from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.tokenizer import Tokenizer

BACKENDS = registry.names()
# the backends whose checkpoints ship (the service waits for these; the others may be untrained)
SHIPPED = tuple(b.name for b in registry.backends() if b.shipped)
# backend settings scaled down with the tiny width (defaults elsewhere)
TINY_SETTINGS = {"memsizer": {"k": 8}, "performer": {"features": 32}}


@pytest.fixture
def tokenizer():
    return Tokenizer()


def tiny_config(backend: str, **overrides) -> ModelConfig:
    fields = dict(backend=backend, d_model=32, d_ff=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
                  dropout=0.0, settings=dict(TINY_SETTINGS.get(backend, {})))
    fields.update(overrides)
    return ModelConfig(**fields)


def tiny_model(backend: str, seed: int = 0, **overrides) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(tiny_config(backend, **overrides)).eval()
    # random init leaves MemSizer's LayerNorms and biases at identity/zero; perturb everything so
    # the equivalence tests exercise every parameter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _record(split, per_place):
    correct, total = sum(c for c, _ in per_place.values()), sum(t for _, t in per_place.values())
    return {"split": split, "accuracy": correct / total, "correct": correct, "total": total,
            "per_place": {p: {"correct": c, "total": t, "accuracy": c / t} for p, (c, t) in per_place.items()}}


# what `training.evaluate --record` stores, for the page's reliability charts
TINY_EVALUATION = {
    "interpolate_test": _record("interpolate", {"units": (1, 2), "tens": (1, 2)}),
    "train_per_place": _record("train", {"units": (3, 4), "billions": (1, 4)}),
    "extrapolate_test": _record("extrapolate", {"hundreds": (0, 2), "ten billions": (1, 2)}),
    "beyond_test": _record("beyond", {"hundreds": (1, 2), "millions": (1, 2)}),  # places past the digits
}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A checkpoint directory with tiny, untrained models of every registered backend."""
    from models.checkpoint import save_checkpoint
    root = tmp_path_factory.mktemp("checkpoints")
    for backend in BACKENDS:
        save_checkpoint(tiny_model(backend), root / backend, Tokenizer(), "int8",
                        extra={"provenance": {"steps": 7}, "evaluation": TINY_EVALUATION})
    return root


@pytest.fixture
def app(tiny_checkpoints):
    from app import create_app
    # torch: tests compare served answers with in-process torch answers (auto would pick by CPU)
    return create_app({"TESTING": True, "CHECKPOINT_DIR": str(tiny_checkpoints), "MAX_CONTENT_LENGTH": 4096,
                       "MAX_BATCH_QUESTIONS": 8, "RUNTIME": "torch"})


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(checkpoints, work_dir, command=("-c", "gunicorn.conf.py"), **env_overrides):
    """Real gunicorn (gunicorn.conf.py, 2 workers, unless `command` says otherwise) on a free loopback
    port; returns (process, url, log)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import requests
    port = free_port()
    # torch unless a test asks otherwise: tests compare served answers with in-process torch answers
    env = {**os.environ, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2", "GUNICORN_ACCESSLOG": "",
           "PLACEVALUE_CHECKPOINT_DIR": str(checkpoints), "PROMETHEUS_MULTIPROC_DIR": str(work_dir),
           "PLACEVALUE_RUNTIME": "torch", **env_overrides}
    log = open(Path(work_dir) / "server.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", *command, "wsgi:app"],
                               cwd=Path(__file__).resolve().parent.parent, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url, log
        except requests.RequestException:  # refused, or accepted while workers still boot
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            raise RuntimeError(f"gunicorn did not become ready:\n{log.read()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live_server(tiny_checkpoints, tmp_path_factory):
    """Real gunicorn on loopback with tiny checkpoints, shut down (and checked) after the module."""
    process, url, log = start_gunicorn(tiny_checkpoints, tmp_path_factory.mktemp("gunicorn"),
                                       PLACEVALUE_MAX_CONTENT_LENGTH="4096")
    yield {"url": url, "process": process, "log": log}
    process.terminate()
    assert process.wait(timeout=30) == 0, "gunicorn did not shut down cleanly"
    log.close()


def pytest_collection_modifyitems(config, items):
    """The longest test (training every backend's tiny config for 600 steps) first: collected last, it ran
    alone at the end of `make test`'s two workers; first, the quick tests fill in around it."""
    items.sort(key=lambda item: item.originalname != "test_default_recipe_learns_a_tiny_config")
