"""Safe by default: nothing in the shipped code paths can unpickle data; debug is off."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNPICKLING = re.compile(r"\b(torch\.load|pickle|cPickle|dill|joblib\.load|np\.load|numpy\.load|marshal\.loads)\b")


@pytest.mark.parametrize("package", ["app", "models", "training", "benchmarks"])
def test_no_code_path_unpickles(package):
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / package).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if UNPICKLING.search(line)]
    assert offenders == []


def test_weights_are_safetensors_and_configs_json():
    for directory in (ROOT / "checkpoints").iterdir():
        if directory.is_dir():
            suffixes = {p.suffix for p in directory.iterdir() if p.is_file()}
            assert suffixes <= {".json", ".safetensors", ".txt"}, f"{directory}: only safetensors, JSON and text"
            assert (directory / "model.safetensors").read_bytes()[8:9] == b"{", "a safetensors header follows the length"


def test_debug_is_off_unless_asked(app, tiny_checkpoints):
    from app import create_app
    assert app.debug is False
    assert create_app({"CHECKPOINT_DIR": str(tiny_checkpoints), "DEBUG": True}).debug is True
