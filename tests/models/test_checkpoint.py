"""Checkpoint files: safetensors + config.json, int8 and 4-bit storage, verification at load."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.memoryformer import MemoryLayer
from models.checkpoint import (GROUP_SIZE, CheckpointError, dequantize_int4, load_checkpoint, quantize_int4,
                               save_checkpoint, sha256_file, weights_as_stored)
from tests.conftest import BACKENDS, tiny_model
from training.export import main as export_main

QUESTIONS = ["What is the tens digit of 89290?", "What is the units digit of 7?"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weights_format", ["float32", "int8", "int4"])
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
        relative_error = ((want - got).pow(2).mean() / want.var()).item()
        # tiny random models are the hard case (a whole 32-value row per 4-bit group); the shipped
        # models' accuracy from their int4 files is measured in tests/test_shipped_checkpoints.py.
        # Where hash codes decide which weights are used, rounding flips some codes downstream:
        # measured over tiny seeds 0-5, int8 gives 0.006-0.10 there (with or without abacus
        # positions), where weights stored wrongly (wrong scale or rows) give 1 or more
        hashed = any(isinstance(m, MemoryLayer) for m in model.modules())
        bound = {"int8": 0.15 if hashed else 1e-3, "int4": 1.5 if hashed else 0.05}[weights_format]
        assert relative_error < bound, relative_error
        for name, buffer in model.named_buffers():  # buffers (random features...) are never quantized
            if name in model.state_dict():
                assert torch.equal(dict(loaded.named_buffers())[name], buffer), name


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


@pytest.mark.parametrize("cols", [GROUP_SIZE, 3 * GROUP_SIZE, 100, 7])
def test_int4_groups_round_trip_within_half_a_step(cols):
    """Every value lands within half a quantization step of its group; group extremes are kept."""
    matrix = torch.randn(5, cols) * torch.logspace(-3, 0, 5)[:, None]  # rows of very different scale
    parts = quantize_int4(matrix)
    assert parts["int4"].dtype == torch.uint8 and parts["int4"].shape == (5, (cols + 1) // 2)
    assert parts["scale"].dtype == torch.float16 and parts["scale"].shape == (5, -(-cols // GROUP_SIZE))
    restored = dequantize_int4(parts["int4"], parts["scale"], parts["min"], cols)
    step = parts["scale"].float().repeat_interleave(GROUP_SIZE, dim=1)[:, :cols]
    # half a step, plus float16 rounding of the group minimum
    assert ((restored - matrix).abs() <= step / 2 + 1e-3 * matrix.abs().amax(dim=1, keepdim=True)).all()
    assert restored.shape == matrix.shape


def test_int4_weights_are_packed_and_about_seven_times_smaller(tmp_path, tokenizer):
    model = tiny_model("performer", d_model=64, d_ff=256)
    save_checkpoint(model, tmp_path / "f", tokenizer, "float32")
    save_checkpoint(model, tmp_path / "q", tokenizer, "int4")
    stored = load_file(tmp_path / "q" / "model.safetensors")
    assert stored["encoder.0.ff.up.weight.int4"].shape == (256, 32)
    assert stored["encoder.0.self_attn.projection"].dtype == torch.float32, "random features stay exact"
    learned = sum(p.numel() for p in model.parameters() if p.dim() == 2) * 4
    size = {f: (tmp_path / f / "model.safetensors").stat().st_size for f in "fq"}
    assert size["f"] - size["q"] > 0.8 * learned, "4.5 bits instead of 32 per learned matrix weight"


def test_export_with_smaller_int4_groups_is_closer_and_loads_by_its_stored_group_size(tmp_path, tokenizer):
    """`training.export --group-size`: the files record their group size, so loading needs no flag,
    and halving the groups brings the dequantized matrices closer to the float weights."""
    model = tiny_model("memoryformer", d_model=64, d_ff=256)
    save_checkpoint(model, tmp_path / "f", tokenizer, "float32")
    errors = {}
    for group_size in (GROUP_SIZE, GROUP_SIZE // 2):
        out = tmp_path / f"g{group_size}"
        export_main(["--checkpoint", str(tmp_path / "f"), "--out", str(out), "--group-size", str(group_size)])
        with safe_open(out / "model.safetensors", "pt") as stored:
            assert stored.metadata()["group_size"] == str(group_size)
        restored, _, _ = load_checkpoint(out)
        errors[group_size] = sum((p - model.state_dict()[name]).abs().mean().item()
                                 for name, p in restored.state_dict().items() if p.dim() == 2)
    # a group's step is its range / 15; the range of 32 normal draws is ~12% below that of 64
    assert 0 < errors[GROUP_SIZE // 2] < 0.95 * errors[GROUP_SIZE]
    with pytest.raises(SystemExit):
        export_main(["--checkpoint", str(tmp_path / "f"), "--out", str(tmp_path / "bad"), "--group-size", "0"])
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weights_format, group_size", [("int8", GROUP_SIZE), ("int4", 16)])
def test_weights_as_stored_are_the_files_weights_with_straight_through_gradients(tmp_path, tokenizer, backend,
                                                                                 weights_format, group_size):
    """Quantization-aware training sees exactly what the stored file gives back, its gradients are
    the stored model's, and the float weights come back unchanged."""
    model = tiny_model(backend)
    save_checkpoint(model, tmp_path, tokenizer, weights_format, group_size=group_size)
    stored, _, _ = load_checkpoint(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    src = torch.tensor([tokenizer.encode(q) for q in QUESTIONS[:1]])
    tgt_in, tgt_out = torch.tensor([[1, 12]]), torch.tensor([[12, 2]])  # <bos> d / d <eos>
    stored_loss = stored(src, tgt_in, tgt_out)[1]
    stored_loss.backward()
    with weights_as_stored(model, weights_format, group_size):
        inside = model.state_dict()
        for name, value in stored.state_dict().items():
            assert torch.equal(inside[name], value), name
        loss = model(src, tgt_in, tgt_out)[1]
        loss.backward()
    assert loss.item() == stored_loss.item()
    for (name, p), (_, q) in zip(model.named_parameters(), stored.named_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before[k], inside[k]) for k in before), "nothing was quantized"
    with weights_as_stored(model, "float32"):  # float32 files store the weights as they are
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
