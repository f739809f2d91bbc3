"""torch int8 serving (models/runtimes/torch_int8.py): every Linear quantized, the function kept up to
int8 rounding, decoding still incremental-equals-parallel, and CPU only."""
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from models.runtimes.torch_int8 import quantize_linear_layers
from models.tokenizer import BOS, pad_batch
from tests.conftest import BACKENDS, tiny_model


def linear_layers(model):
    return [m for m in model.modules() if type(m) is nn.Linear]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_linear_layer_becomes_int8_and_the_logits_stay_close(backend, tokenizer):
    model = tiny_model(backend)
    src = pad_batch([tokenizer.encode(q) for q in ("What is the tens digit of 1234?", "What is the units digit of 7?")])
    tgt = torch.full((2, 3), BOS)
    with torch.inference_mode():
        reference, _ = model(src, tgt)
    count = len(linear_layers(model))
    assert count, "every backend has at least its output projection"
    quantized = quantize_linear_layers(model)
    assert not linear_layers(quantized), "a float32 Linear is left"
    assert sum(isinstance(m, DynamicInt8Linear) for m in quantized.modules()) == count
    with torch.inference_mode():
        logits, _ = quantized(src, tgt)
    # int8 weights per output channel and int8 activations per pass: close, not equal
    assert not torch.equal(logits, reference)
    assert torch.allclose(logits, reference, atol=0.05 * reference.abs().max().item()), \
        (logits - reference).abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_decoding_state_matches_the_parallel_int8_pass(backend, tokenizer):
    model = quantize_linear_layers(tiny_model(backend, seed=3))
    src = tokenizer.batch_questions(["What is the hundreds digit of 98765?", "What is the units digit of 7?"])
    tgt_in = torch.cat([torch.full((2, 1), BOS), torch.randint(3, 98, (2, 6))], dim=1)
    with torch.inference_mode():
        full, _ = model(src, tgt_in)
        state = model.start_decoding(src)
        steps = torch.stack([model.decode_step(tgt_in[:, t:t + 1], state) for t in range(tgt_in.shape[1])], dim=1)
    # activations are quantized per call (one scale per tensor), so one step's rows and the whole
    # target's differ by rounding: close, where a broken state (a step reading the wrong prefix) is far
    assert torch.allclose(steps, full, atol=0.05 * full.abs().max().item()), (steps - full).abs().max()


def test_int8_refuses_a_model_off_the_cpu():
    model = tiny_model("transformer").to("meta")
    with pytest.raises(ValueError, match="CPU only"):
        quantize_linear_layers(model)
