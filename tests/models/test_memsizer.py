"""MemSizer's encoder choice: MemSizer attention everywhere (the official `--use-memsizer`) or softmax
attention in the encoder (the official translation recipe), with relative positions acting only there.
The shared equivalences at the default settings are in tests/test_models.py."""
import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.memsizer import MemSizerAttention, MemSizerSettings
from models.tokenizer import BOS, Tokenizer
from models.transformer import SoftmaxAttention
from tests.conftest import tiny_config, tiny_model
from tests.models.test_models import QUESTIONS, TOL, cached_and_full_logits, causal_forms


def softmax_encoder(**overrides):
    return tiny_model("memsizer", settings={"k": 8, "encoder": "softmax"}, **overrides)


@pytest.mark.parametrize("relative", ["none", "alibi", "rope"])
def test_softmax_encoder_decodes_incrementally_as_its_parallel_forward(relative):
    model = softmax_encoder(relative_positions=relative)
    assert all(isinstance(layer.self_attn, SoftmaxAttention) for layer in model.encoder)
    assert all(isinstance(layer.self_attn, MemSizerAttention) and isinstance(layer.cross_attn, MemSizerAttention)
               for layer in model.decoder), "the decoder's attention stays MemSizer's"
    tokenizer = Tokenizer()
    src = tokenizer.batch_questions(QUESTIONS)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 98, (3, 7))], dim=1)
    steps, full = cached_and_full_logits(model, src, tgt_in)
    assert torch.allclose(steps, full, **TOL), (steps - full).abs().max()
    with torch.no_grad():
        for i, q in enumerate(QUESTIONS):  # padding after a question changes nothing
            assert torch.allclose(full[i], model(tokenizer.batch_questions([q]), tgt_in[i:i + 1])[0][0], **TOL)


def test_relative_positions_act_in_the_encoder_and_the_decoder_keeps_its_sinusoids():
    model = softmax_encoder(relative_positions="alibi")
    assert model.config.relative_in("encoder") and not model.config.relative_in("causal")
    plain = softmax_encoder()
    plain.load_state_dict(model.state_dict())
    tokenizer = Tokenizer()
    src = tokenizer.batch_questions(QUESTIONS[:1])
    with torch.no_grad():
        memory, pad = model.encode(src)
        assert not torch.allclose(memory, plain.encode(src)[0], atol=1e-3), "alibi replaces the encoder's sinusoids"
        tgt = torch.full((1, 1), BOS)
        # the same encoder output through both decoders: identical, since both add the decoder's sinusoids
        assert torch.allclose(model.decode(tgt, memory, pad), plain.decode(tgt, memory, pad), **TOL)


def test_memsizer_encoder_refuses_relative_positions_and_unknown_encoders():
    with pytest.raises(ValueError, match="takes no 'alibi' relative positions"):
        tiny_config("memsizer", relative_positions="alibi")
    with pytest.raises(ValueError, match="encoder must be one of"):
        MemSizerSettings(encoder="performer")


def test_softmax_encoder_round_trips_through_a_checkpoint(tmp_path):
    model = softmax_encoder(relative_positions="alibi")
    save_checkpoint(model, tmp_path, Tokenizer(), "float32")
    loaded, _, stored = load_checkpoint(tmp_path)
    assert stored["architecture"]["settings"]["encoder"] == "softmax"
    src = Tokenizer().batch_questions(QUESTIONS)
    with torch.no_grad():
        assert torch.equal(loaded(src, src[:, :4])[0], model(src, src[:, :4])[0])


def test_the_page_says_which_encoder_a_checkpoint_uses():
    from models.memsizer import configuration
    assert "encoder: softmax attention (the official translation recipe's encoder; alibi positions are ours" in configuration(
        tiny_config("memsizer", settings={"k": 8, "encoder": "softmax"}, relative_positions="alibi"))
    assert "encoder: MemSizer attention (the official --use-memsizer mode)" in configuration(tiny_config("memsizer"))


# --- the decay gate (ours): S_t[i] = gamma_i S_{t-1}[i] + k_t[i] v_t, scaled by the decayed count --------

GATED = {"causal_gate": "decay"}


def gated_loop(module: MemSizerAttention, x: torch.Tensor) -> torch.Tensor:
    """The gate's recurrence as a loop over positions, from the module docstring's equations."""
    gamma = module.decay.double()
    keys, values = module.keys_values(x)
    a = module.read_weights(x)
    S, n, out = 0, 0, []
    for t in range(x.shape[1]):
        S = gamma[None, :, None] * S + keys[:, t, :, None] * values[:, t, None, :]
        n = gamma * n + 1
        out.append(torch.einsum("bi,bid->bd", a[:, t] * n.rsqrt(), S))
    return torch.stack(out, dim=1)


def test_the_decay_gate_is_its_recurrence_in_every_form():
    """Parallel, step by step and in chunks: the same outputs as the loop; a fixed-size state; and not
    the ungated outputs."""
    torch.manual_seed(0)
    module = MemSizerAttention(tiny_config("memsizer", settings=GATED), "causal").double().eval()
    assert module.decay.shape == (module.k,) and bool((module.decay < 1).all())
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        full, steps, chunked, state = causal_forms(module, x)
        loop = gated_loop(module, x)
        ungated = MemSizerAttention(tiny_config("memsizer"), "causal").double().eval()
        ungated.load_state_dict(module.state_dict())
        assert not torch.allclose(ungated(x), full, atol=1e-6)
    assert state.total.shape == (2, module.k, 32) and state.count == 10, "the gated state keeps its fixed size"
    assert torch.allclose(full, loop, atol=1e-12)
    assert torch.allclose(steps, full, atol=1e-12) and torch.allclose(chunked, full, atol=1e-12)


def test_the_gate_is_a_setting_that_slim_refuses_and_the_page_names():
    from models.memsizer import configuration
    from models.slim import check_slim
    with pytest.raises(ValueError, match="causal_gate must be one of"):
        MemSizerSettings(causal_gate="alibi")
    with pytest.raises(ValueError, match="decay gate"):
        check_slim(tiny_model("memsizer", settings=GATED, dropout=0.0))
    assert "per-slot decays" in configuration(tiny_config("memsizer", settings=GATED))
