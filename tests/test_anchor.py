"""The CTranslate2 anchor runs our Transformer's own weights: its per-token log-probabilities of
the same answers match ours (so the serving comparison times the same model), for either source
position count and with abacus digit positions, and it refuses what it cannot express."""
import pytest
import torch

from models.ctranslate2_runtime import (CTranslate2Runner, convert, ctranslate2_spec, source_format, source_tokens,
                                        token_name)
from models.task import generate
from models.tokenizer import PAD, Tokenizer, pad_batch
from tests.conftest import tiny_model


@pytest.mark.parametrize("source_positions,digit_positions,digit_offset_max",
                         [("end", "none", 0), ("start", "abacus", 0), ("end", "abacus", 0), ("start", "none", 0),
                          ("start", "abacus", 20)])
def test_converted_transformer_scores_answers_like_ours(tmp_path, source_positions, digit_positions,
                                                        digit_offset_max):
    model = tiny_model("transformer", n_heads=4, source_positions=source_positions, digit_positions=digit_positions,
                       digit_offset_max=digit_offset_max)
    tokenizer = Tokenizer()
    model_dir = convert(model, tmp_path / "ct2")
    anchor = CTranslate2Runner(model_dir, tokenizer, threads=1)
    pairs = generate("train", 24, seed=3)  # questions of many lengths: padding and reversal both matter
    sources = [tokenizer.encode(q) for q, _ in pairs]
    targets = [tokenizer.encode_target(a) for _, a in pairs]  # bos, answer, eos
    with torch.inference_mode():
        src, tgt = pad_batch(sources), pad_batch(targets)
        logits, _ = model(src, tgt[:, :-1])
        ours = torch.log_softmax(logits.double(), dim=-1).gather(-1, tgt[:, 1:, None])[..., 0]
    scored = anchor.translator.score_batch(source_tokens(sources, source_format(model.config)),
                                           [[token_name(t) for t in target[1:-1]] for target in targets])
    for row, (target, result) in enumerate(zip(targets, scored)):
        theirs = torch.tensor(result.log_probs, dtype=torch.float64)  # answer tokens then eos
        assert len(theirs) == len(target) - 1
        assert torch.allclose(theirs, ours[row, :len(theirs)], atol=2e-4), (pairs[row], theirs, ours[row])
    # and greedy answers agree with ours on the same questions
    with torch.inference_mode():
        greedy = [tokenizer.decode(r) for r in model.generate(pad_batch(sources), max_len=30).tolist()]
    assert anchor.answer_ids(sources) == greedy


@pytest.mark.parametrize("backend", ["memsizer", "performer", "memoryformer"])
def test_backends_without_a_spec_are_refused(backend):
    with pytest.raises(ValueError, match="no spec"):
        ctranslate2_spec(tiny_model(backend))


def test_projected_digit_positions_are_refused():
    with pytest.raises(ValueError, match="abacus-sinusoid"):
        ctranslate2_spec(tiny_model("transformer", n_heads=4, digit_positions="abacus-sinusoid"))


def test_source_tokens_carry_reversal_and_significance():
    ids = [Tokenizer().encode("Of 507?")]
    plain = [token_name(t) for t in ids[0]]
    assert source_tokens(ids, {"reverse": True, "significance": False}) == [plain[::-1]]
    with_places = source_tokens(ids, {"reverse": False, "significance": True})[0]
    assert [token.split("\uffe8")[1] for token in with_places] == ["s0"] * 3 + ["s3", "s2", "s1", "s0"]


def test_pad_is_never_a_source_token():
    assert token_name(PAD) == "t0"


@pytest.mark.parametrize("mode", ["rope", "alibi"])
def test_relative_positions_are_refused(mode):
    """CTranslate2's encoder-decoder spec has neither (ALiBi exists only in its decoder spec), so such a
    Transformer serves on torch."""
    with pytest.raises(ValueError, match=mode):
        ctranslate2_spec(tiny_model("transformer", n_heads=4, relative_positions=mode))
