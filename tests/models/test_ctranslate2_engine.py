"""The CTranslate2 anchor runs our Transformer's own weights: its per-token log-probabilities of
the same answers match ours (so the serving comparison times the same model), for either source
position count, with abacus digit positions (and their training offsets) and with ALiBi, and it
refuses what it cannot express."""
import pytest
import torch

from models.runtimes.ctranslate2_engine import (CTranslate2Runner, convert, ctranslate2_spec, encoder_alibi_table,
                                        source_format, source_tokens, token_name)
from models.task import generate
from models.tokenizer import PAD, Tokenizer, pad_batch
from tests.conftest import tiny_model


@pytest.mark.parametrize("source_positions,digit_positions,digit_offset_max,relative_positions",
                         [("end", "none", 0, "none"), ("start", "abacus", 0, "none"), ("end", "abacus", 0, "none"),
                          ("start", "none", 0, "none"), ("start", "abacus", 20, "none"),
                          ("start", "none", 0, "alibi"), ("start", "abacus", 20, "alibi")])
def test_converted_transformer_scores_answers_like_ours(tmp_path, source_positions, digit_positions,
                                                        digit_offset_max, relative_positions):
    model = tiny_model("transformer", n_heads=4, source_positions=source_positions, digit_positions=digit_positions,
                       digit_offset_max=digit_offset_max, relative_positions=relative_positions)
    tokenizer = Tokenizer()
    model_dir = convert(model, tmp_path / "ct2")
    anchor = CTranslate2Runner(model_dir, tokenizer, threads=1)
    # questions of many lengths (padding and reversal both matter), the longest with 12-digit numbers:
    # ALiBi's encoder biases must hold at every distance a question has
    pairs = generate("train", 24, seed=3) + generate("extrapolate", 8, seed=3)
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


def test_rotary_positions_are_refused():
    """CTranslate2's encoder-decoder spec has no rotary positions, so such a Transformer serves on torch."""
    with pytest.raises(ValueError, match="rope"):
        ctranslate2_spec(tiny_model("transformer", n_heads=4, relative_positions="rope"))


def test_encoder_alibi_table_gives_every_distance_its_own_exact_row():
    """The table CTranslate2 reads by T5's bidirectional buckets: rows |n| for keys at or before the
    query, rows B/2 + n after it; both hold -slope * distance, for every distance below max_source_len."""
    slopes = [0.25, 0.0625]
    table, max_distance = encoder_alibi_table(slopes, max_source_len=10)
    assert table.shape == (40, 2) and max_distance == 10
    for n in range(-9, 10):
        row = abs(n) if n <= 0 else 20 + n
        assert table[row].tolist() == [-s * abs(n) for s in slopes]
