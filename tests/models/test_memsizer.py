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
from tests.models.test_models import QUESTIONS, TOL, cached_and_full_logits


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
    with pytest.raises(ValueError, match="no query-key scores"):
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
