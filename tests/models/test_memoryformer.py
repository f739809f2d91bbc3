"""MemoryFormer's memory layer pinned against slow references: the fused lookup against a loop,
the code weights against brute force over all 2^tau sign codes, gradients by gradcheck; Q/K/V
share one hash; settings are validated; bucket usage is measured. Decoding (cached vs full),
padding invariance and batching are pinned for every backend in tests/test_models.py."""
import itertools
import json

import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.memoryformer import (MemoryAttention, MemoryFormerSettings, MemoryLayer, bucket_entropy, chunk_codes,
                                 code_weights, hash_input)
from models.tokenizer import Tokenizer
from tests.conftest import tiny_config, tiny_model


def away_from_zero(*shape, dtype=torch.float64, seed=0):
    """Values with |v| >= 0.2: a finite-difference step cannot flip a sign code."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=dtype)
    return torch.where(v >= 0, v + 0.2, v - 0.2)


@pytest.mark.parametrize("tau", [1, 3, 4])
@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_code_and_weight_against_brute_force_over_every_sign_code(tau, weighting):
    z = torch.randn(50, 6, tau, dtype=torch.float64)
    signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=tau)), dtype=torch.float64)  # (2^tau, tau)
    # code c has bit i (most significant first) set when sign i is +1
    codes_of_signs = chunk_codes(signs)
    logits = torch.einsum("nkt,ct->nkc", z, signs)
    probability = torch.softmax(logits, dim=-1)
    best = logits.argmax(-1)  # the sign code closest to z is sign(z) itself
    assert torch.equal(codes_of_signs[best], chunk_codes(z))
    selected = probability.gather(-1, best[..., None])[..., 0]
    expected = selected if weighting == "paper" else z.abs().sum(-1) * selected
    assert torch.allclose(code_weights(z, weighting), expected, atol=1e-12)


def test_codes_stay_exact_under_bfloat16_autocast_at_the_widest_tau():
    # codes of 12 bits reach 4095; bfloat16 holds integers exactly only up to 256, so the matrix
    # product that sums the bits must not be autocast (training's --bf16)
    z = torch.randn(500, 3, 12)
    expected = sum((z[..., i] >= 0).long() << (11 - i) for i in range(12))
    assert expected.max() > 256
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(chunk_codes(z), expected)
        layer = MemoryLayer(36, 4, tau=12, weighting="paper")
        assert torch.equal(layer.hash(z.reshape(500, 36)).rows % 2 ** 12, expected)


@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_fused_lookup_equals_a_slow_loop(weighting):
    torch.manual_seed(0)
    layer = MemoryLayer(12, 5, tau=3, weighting=weighting).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    expected = torch.zeros(2, 7, 5, dtype=torch.float64)
    tables = layer.tables.view(4, 8, 5)  # 4 chunks, 2^3 rows each
    for b, t in itertools.product(range(2), range(7)):
        for k in range(4):
            chunk = x[b, t, 3 * k:3 * k + 3]
            code = sum(int(chunk[i] >= 0) << (2 - i) for i in range(3))
            weight = torch.sigmoid(2 * chunk.abs()).prod()
            if weighting == "official":
                weight = weight * chunk.abs().sum()
            expected[b, t] += weight * tables[k, code]
        expected[b, t] += layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-12)


@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_gradcheck_reaches_input_tables_and_bias(weighting):
    layer = MemoryLayer(8, 3, tau=4, weighting=weighting).double()
    x = away_from_zero(5, 8).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, tables, bias: torch.nn.functional.embedding_bag(
        hash_input(x, 4, weighting).rows, tables, per_sample_weights=hash_input(x, 4, weighting).weights,
        mode="sum") + bias, (x, layer.tables, layer.bias))
    out = layer(x).sum()
    out.backward()
    assert x.grad.abs().sum() > 0, "gradients must reach the input through the code weights"


def test_query_key_value_share_one_hash_and_there_is_no_output_projection():
    torch.manual_seed(1)
    attention = MemoryAttention(tiny_config("memoryformer"), "encoder")
    x = torch.randn(2, 5, 32)
    q, k, v = attention.project_self(x)
    assert torch.equal(q, attention.q_memory(x)) and torch.equal(k, attention.k_memory(x))
    assert torch.equal(v, attention.v_memory(x))
    assert not any(isinstance(m, torch.nn.Linear) for m in attention.modules()), "no fully-connected layer left"


def test_no_fully_connected_layer_inside_the_blocks():
    model = tiny_model("memoryformer")
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears == ["lm_head"], linears  # the output classifier is shared by every backend


def test_settings_are_validated():
    with pytest.raises(ValueError, match="tau"):
        MemoryFormerSettings(tau=0)
    with pytest.raises(ValueError, match="weighting"):
        MemoryFormerSettings(weighting="cosine")
    with pytest.raises(ValueError, match="extra_bits"):
        MemoryFormerSettings(tau=10, extra_bits=3)
    with pytest.raises(ValueError, match="multiple of tau"):
        tiny_model("memoryformer", settings={"tau": 5})
    config = ModelConfig(backend="memoryformer", vocab_size=10, settings={"tau": 8, "weighting": "official"})
    assert config.settings == MemoryFormerSettings(tau=8, weighting="official")


@pytest.mark.parametrize("extra_bits", [0, 1, 2])
def test_memory_block_expands_to_k_times_tau_plus_e_and_hashes_tau_plus_e_bits(extra_bits):
    """The official block: d -> K (tau + e) -> d, the second layer's K tables 2^(tau + e) rows tall."""
    d, tau = 32, 4
    model = tiny_model("memoryformer", settings={"tau": tau, "extra_bits": extra_bits})
    block = model.encoder[0].ff
    chunks, wide = d // tau, tau + extra_bits
    assert (block.first.d_in, block.first.d_out, block.first.tau) == (d, chunks * wide, tau)
    assert (block.second.d_in, block.second.d_out, block.second.tau, block.second.chunks) == (chunks * wide, d, wide, chunks)
    assert block.first.tables.shape == (chunks * 2 ** tau, chunks * wide)
    assert block.second.tables.shape == (chunks * 2 ** wide, d)
    assert block.norm.normalized_shape == (chunks * wide,)
    params = sum(p.numel() for p in block.parameters())
    assert params == chunks * 2 ** tau * chunks * wide + chunks * wide + 2 * chunks * wide + chunks * 2 ** wide * d + d
    x = torch.randn(3, 5, d)
    assert block(x).shape == (3, 5, d)


def test_configs_stored_before_expanding_bits_load_as_e_0(tmp_path):
    """A stored config without extra_bits means the block it was trained with: no expansion."""
    model = tiny_model("memoryformer", settings={"tau": 4, "extra_bits": 0})
    save_checkpoint(model, tmp_path, Tokenizer(), "float32")
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["architecture"]["settings"]["extra_bits"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    loaded, _, _ = load_checkpoint(tmp_path)
    assert loaded.config.settings.extra_bits == 0
    assert MemoryFormerSettings(extra_bits=2).extra_bits == 2, "the official block is a setting"
    src = Tokenizer().batch_questions(["What is the tens digit of 89290?"])
    with torch.no_grad():
        assert torch.equal(loaded(src, src[:, :3])[0], model(src, src[:, :3])[0])


def test_bucket_entropy_spans_zero_to_tau_bits():
    model = tiny_model("memoryformer").eval()
    src = Tokenizer().batch_questions(["What is the tens digit of 89290?", "What is the units digit of 7?"])
    entropies = bucket_entropy(model, src, src[:, :3])
    layers = dict(model.named_modules())
    assert entropies and all(0.0 <= e <= layers[name].tau for name, e in entropies.items())
    assert max(entropies.values()) > 1.0, "a random model's hash spreads inputs over several rows"
    assert all(layer.recorded_codes is None for layer in model.modules() if isinstance(layer, MemoryLayer))
