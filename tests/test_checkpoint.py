"""Checkpoint files: safetensors + config.json, int8 storage, verification at load."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_file
from tests.conftest import BACKENDS, tiny_model

QUESTIONS = ["What is the tens digit of 89290?", "What is the units digit of 7?"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weights_format", ["float32", "int8"])
def test_save_load_gives_same_predictions(tmp_path, tokenizer, backend, weights_format):
    model = tiny_model(backend)
    config = save_checkpoint(model, tmp_path, tokenizer, weights_format, extra={"provenance": {"steps": 3}})
    loaded, loaded_tokenizer, stored = load_checkpoint(tmp_path)
    assert stored == config == json.loads((tmp_path / "config.json").read_text())
    assert stored["weights"]["sha256"] == sha256_file(tmp_path / "model.safetensors")
    assert stored["provenance"]["steps"] == 3 and stored["model"] == backend
    src = loaded_tokenizer.batch_questions(QUESTIONS)
    with torch.no_grad():
        want, got = model(src, src[:, :4])[0], loaded(src, src[:, :4])[0]
    if weights_format == "float32":
        assert torch.equal(want, got)
        assert torch.equal(model.generate(src), loaded.generate(src))
    else:
        assert torch.allclose(want, got, atol=0.1), "int8 per-channel keeps logits close"


def test_int8_weights_are_stored_as_int8_and_smaller(tmp_path, tokenizer):
    model = tiny_model("transformer", d_model=64, d_ff=256)
    save_checkpoint(model, tmp_path / "f", tokenizer, "float32")
    save_checkpoint(model, tmp_path / "q", tokenizer, "int8")
    stored = load_file(tmp_path / "q" / "model.safetensors")
    assert stored["encoder.0.ff.up.weight.int8"].dtype == torch.int8
    assert stored["encoder.0.ff.up.weight.scale"].shape == (256,)
    assert (tmp_path / "q" / "model.safetensors").stat().st_size < 0.4 * (tmp_path / "f" / "model.safetensors").stat().st_size


def test_tampered_weights_are_refused(tmp_path, tokenizer):
    save_checkpoint(tiny_model("memsizer"), tmp_path, tokenizer)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        load_checkpoint(tmp_path)


def test_truncated_weights_are_refused(tmp_path, tokenizer):
    save_checkpoint(tiny_model("memsizer"), tmp_path, tokenizer)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    config = json.loads((tmp_path / "config.json").read_text())
    config["weights"]["sha256"] = sha256_file(weights)  # even with a matching hash it must not load
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors|cannot read"):
        load_checkpoint(tmp_path)


def test_wrong_shapes_are_refused(tmp_path, tokenizer):
    save_checkpoint(tiny_model("transformer"), tmp_path, tokenizer)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(weights)
    tensors["lm_head.weight"] = torch.zeros(5, 5)
    save_file(tensors, weights)
    config = json.loads((tmp_path / "config.json").read_text())
    config["weights"]["sha256"] = sha256_file(weights)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrong shapes \\['lm_head.weight'\\]"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint config"):
        load_checkpoint(tmp_path / "nowhere")
