"""Equivalences every backend must satisfy (float32, tiny configs)."""
import pytest
import torch

from models.config import ModelConfig
from models.checkpoint import load_checkpoint, save_checkpoint
from models.memsizer import MemSizerAttention
from models import registry
from models.seq2seq import digit_significance, sinusoidal_table
from models.transformer import rotate
from models.tokenizer import BOS, PAD, pad_batch
from tests.conftest import BACKENDS, tiny_config, tiny_model

QUESTIONS = ["What is the tens digit of 89290?", "What is the units digit of 7?",
             "What is the hundred millions digit of 123456789012?"]
TOL = dict(atol=1e-5, rtol=1e-4)


def cached_and_full_logits(model, src, tgt_in):
    """Logits of the whole target in one pass, and step by step through the decoding state."""
    with torch.no_grad():
        full, _ = model(src, tgt_in)
        state = model.start_decoding(src)
        steps = torch.stack([model.decode_step(tgt_in[:, t:t + 1], state) for t in range(tgt_in.shape[1])], dim=1)
    return steps, full


def causal_forms(module, x):
    """A causal attention module's outputs for x (B, T, d): in parallel, step by step and in chunks of
    3, 1 and the rest; and the step-by-step state at the end."""
    full = module(x)
    state = module.new_state()
    steps = torch.cat([module(x[:, t:t + 1], state=state) for t in range(x.shape[1])], dim=1)
    chunked_state = module.new_state()
    chunked = torch.cat([module(part, state=chunked_state)
                         for part in x.split([3, 1, x.shape[1] - 4], dim=1)], dim=1)
    return full, steps, chunked, state


@pytest.mark.parametrize("backend", ["memsizer", "performer"])
def test_the_decay_gated_decoder_decodes_as_its_parallel_pass_and_is_padding_invariant(backend, tokenizer):
    """The gate on the causal sums (each backend's own test holds it to its recurrence)."""
    model = tiny_model(backend, settings={"causal_gate": "decay"})
    src = tokenizer.batch_questions(QUESTIONS)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 98, (3, 11))], dim=1)
    steps, full = cached_and_full_logits(model, src, tgt_in)
    assert torch.allclose(steps, full, **TOL), (steps - full).abs().max()
    with torch.no_grad():
        for i, question in enumerate(QUESTIONS):
            single, _ = model(tokenizer.batch_questions([question]), tgt_in[i:i + 1])
            assert torch.allclose(full[i], single[0], **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_incremental_decoding_matches_parallel_forward(backend, tokenizer):
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 98, (3, 11))], dim=1)
    steps, full = cached_and_full_logits(tiny_model(backend), tokenizer.batch_questions(QUESTIONS), tgt_in)
    assert torch.allclose(steps, full, **TOL), (steps - full).abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_equals_one_by_one_with_padding(backend, tokenizer):
    model = tiny_model(backend)
    src = tokenizer.batch_questions(QUESTIONS)
    assert (src == PAD).any(), "the batch must contain padding for this test to mean anything"
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 98, (3, 4))], dim=1)
    with torch.no_grad():
        batched, _ = model(src, tgt_in)
        for i, q in enumerate(QUESTIONS):
            single, _ = model(tokenizer.batch_questions([q]), tgt_in[i:i + 1])
            assert torch.allclose(batched[i], single[0], **TOL)
        generated = model.generate(src, max_len=8)
        for i, q in enumerate(QUESTIONS):
            alone = model.generate(tokenizer.batch_questions([q]), max_len=8)[0]
            assert generated[i, : alone.shape[0]].tolist() == alone.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_stops_and_respects_max_len(backend, tokenizer):
    out = tiny_model(backend).generate(tokenizer.batch_questions(QUESTIONS), max_len=5)
    assert out.shape[0] == 3 and out.shape[1] <= 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_state_is_fixed_size_unless_the_backend_says_it_grows(backend, tokenizer):
    src = tokenizer.batch_questions(QUESTIONS)
    model = tiny_model(backend, max_target_len=256)
    state = model.start_decoding(src)
    token = torch.full((3, 1), BOS)
    with torch.no_grad():
        model.decode_step(token, state)
        after_one = state.self_attention_nbytes()
        for _ in range(199):
            model.decode_step(token, state)
    assert after_one > 0, "the state must hold tensors, or this test measures nothing"
    if model.config.spec.decode_state_grows:
        assert state.self_attention_nbytes() == 200 * after_one, "a cache grows by one position per token"
    else:
        assert state.self_attention_nbytes() == after_one, "a fixed-size state must not grow"


def test_state_sizes_match_the_equations(tokenizer):
    """MemSizer: a (B, k, d) running sum per layer; Performer: S (B, H, m, dh) and z (B, H, m)."""
    src = tokenizer.batch_questions(QUESTIONS)
    expected = {"memsizer": 2 * 3 * 4 * 32 * 4, "performer": 2 * 3 * 4 * (32 * 8 + 32) * 4}
    for backend, nbytes in expected.items():
        model = tiny_model(backend)
        state = model.start_decoding(src)
        with torch.no_grad():
            model.decode_step(torch.full((3, 1), BOS), state)
        assert state.self_attention_nbytes() == nbytes, backend


def reference_memsizer(module: MemSizerAttention, x, pad=None, causal=False):
    """MemSizer's equations (models/memsizer.py docstring) as loops, one sequence at a time."""
    B, T, d = x.shape
    out = torch.zeros(B, T, d)
    for b in range(B):
        keys = torch.nn.functional.layer_norm(x[b] @ module.k_proj.weight.T + module.k_proj.bias, (module.k,),
                                              module.k_norm.weight, module.k_norm.bias)
        values = torch.nn.functional.layer_norm(x[b] @ module.v_proj.weight.T + module.v_proj.bias, (d,),
                                                module.v_norm.weight, module.v_norm.bias)
        real = [j for j in range(T) if pad is None or not pad[b, j]]
        for t in range(T):
            logits = (x[b, t] @ module.q_proj.weight.T + module.q_proj.bias).view(module.n_heads, module.k)
            a = torch.softmax(logits, dim=-1).mean(dim=0)
            sources = [j for j in real if j <= t] if causal else real
            S = sum(torch.outer(keys[j], values[j]) for j in sources) * len(sources) ** -0.5
            out[b, t] = a @ S
    return out


@pytest.mark.parametrize("role", ["encoder", "causal"])
def test_memsizer_matches_loop_reference(role):
    torch.manual_seed(1)
    module = MemSizerAttention(tiny_config("memsizer"), role).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 7, 32)
        pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
        if role == "encoder":
            got, want = module(x, context_pad=pad), reference_memsizer(module, x, pad)
            got, want = got[~pad], want[~pad]
        else:
            got, want = module(x), reference_memsizer(module, x, causal=True)
    assert module.k == (8 if role == "encoder" else 4)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_memsizer_attention_has_no_output_projection():
    module = MemSizerAttention(tiny_config("memsizer"), "cross")
    names = {n for n, _ in module.named_parameters()}
    assert names == {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                     "v_proj.bias", "k_norm.weight", "k_norm.bias", "v_norm.weight", "v_norm.bias"}
    assert module.q_proj.out_features == 4 * 8 and module.k_proj.out_features == 8


def test_source_positions_end_makes_question_mark_position_zero(tokenizer):
    """With end-indexed positions, prefixing text shifts nothing near the '?'."""
    model = tiny_model("transformer", source_positions="end")
    src = tokenizer.batch_questions(["What is the tens digit of 12?", "hat is the tens digit of 12?"])
    with torch.no_grad():
        x = model._embed(src, (~(src == PAD)).sum(1, keepdim=True) - 1 - torch.arange(src.shape[1]), "encoder")
    lengths = (src != PAD).sum(1)
    assert torch.allclose(x[0, lengths[0] - 1], x[1, lengths[1] - 1])
    assert pad_batch([[1]]).shape == (1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generation_always_stops_within_max_len(backend, tokenizer):
    """Even an untrained model that never emits eos yields at most max_len characters."""
    model = tiny_model(backend, seed=3)
    with torch.no_grad():
        model.lm_head.bias[2] = -1e4  # make eos impossible
        out = model.generate(tokenizer.batch_questions(QUESTIONS), max_len=7)
    assert out.shape[1] == 8 and (out[:, -1] == 2).all()
    assert all(len(tokenizer.decode(row)) == 7 for row in out.tolist())


def test_digit_significance_counts_each_number_from_its_last_digit(tokenizer):
    src = tokenizer.batch_questions(["a 905 b 12?", "7"])
    want = [[0, 0, 3, 2, 1, 0, 0, 0, 2, 1, 0], [1] + [0] * 10]  # padding is not a digit
    assert digit_significance(src).tolist() == want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["none", "abacus", "abacus-sinusoid"])
def test_abacus_positions_keep_batching_decoding_and_storage_exact(backend, mode, tokenizer, tmp_path):
    model = tiny_model(backend, digit_positions=mode, source_positions="start")
    src = tokenizer.batch_questions(QUESTIONS)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 98, (3, 5))], dim=1)
    steps, full = cached_and_full_logits(model, src, tgt_in)
    assert torch.allclose(steps, full, **TOL)
    with torch.no_grad():
        for i, q in enumerate(QUESTIONS):
            assert torch.allclose(full[i], model(tokenizer.batch_questions([q]), tgt_in[i:i + 1])[0][0], **TOL)
    save_checkpoint(model, tmp_path, tokenizer, "float32")
    loaded, _, stored = load_checkpoint(tmp_path)
    assert stored["architecture"]["digit_positions"] == mode
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt_in)[0], full)


def test_abacus_adds_each_digit_the_embedding_of_its_place(tokenizer):
    """The encoder input of a digit gains the abacus row of its place (tens: row 2) and nothing else
    does; without abacus there is no such table."""
    model = tiny_model("transformer", digit_positions="abacus", source_positions="start")
    src = tokenizer.batch_questions(["What is the tens digit of 50?", "What is the units digit of 7?"])
    positions = torch.arange(src.shape[1]).expand_as(src)
    with torch.no_grad():
        added = model._embed(src, positions, "encoder", digit_significance(src)) - model._embed(src, positions, "encoder")
    scale = model.config.d_model ** 0.5
    five = len("What is the tens digit of ")
    assert torch.allclose(added[0, five], model.digit_embed.weight[2] * scale)
    assert torch.allclose(added[0, five + 1], model.digit_embed.weight[1] * scale)
    assert torch.allclose(added[1, len("What is the units digit of ")], model.digit_embed.weight[1] * scale)
    assert torch.allclose(added[0, :five], model.digit_embed.weight[0].expand(five, -1) * scale)
    assert "digit_embed.weight" not in dict(tiny_model("transformer", digit_positions="none").named_parameters())


@pytest.mark.parametrize("mode", ["abacus", "abacus-sinusoid"])
def test_random_place_offsets_shift_digits_in_training_only(mode, tokenizer):
    """digit_offset_max: in training each question's digits move up by one random offset (the same
    for all its digits, none for other tokens); in evaluation nothing moves, so answers are
    deterministic and equal to a model that never had offsets."""
    torch.manual_seed(0)
    model = tiny_model("transformer", digit_positions=mode, digit_offset_max=20)
    rows = model.config.max_source_len + 1 + 20
    table = model.digit_embed.weight if mode == "abacus" else model.digit_table
    assert table.shape[0] == rows
    src = tokenizer.batch_questions(["What is the tens digit of 50?"] * 64)
    seen = []
    model._embed = lambda tokens, positions, role, significance=None, vectors=None: seen.append(significance) or torch.zeros(
        *tokens.shape, model.config.d_model)
    model.train()
    model.encode(src)
    model.eval()
    model.encode(src)
    trained, evaluated = seen
    base = digit_significance(src)
    assert torch.equal(evaluated, base)
    shift = trained - base
    digits = base > 0
    assert (shift[~digits] == 0).all(), "only digits move"
    per_question = shift[:, digits[0]]
    assert (per_question == per_question[:, :1]).all(), "one offset per question"
    assert per_question.min() >= 0 and per_question.max() <= 20 and per_question.unique().numel() > 5


def test_place_offsets_need_digit_positions():
    with pytest.raises(ValueError, match="digit_offset_max"):
        tiny_config("transformer", digit_positions="none", digit_offset_max=4)
    with pytest.raises(ValueError, match="digit_offset_max"):
        tiny_config("transformer", digit_offset_max=-1)


def test_stored_configs_from_before_abacus_load_without_it():
    """A config.json written before digit positions existed meant none, whatever today's default is."""
    stored = tiny_config("memsizer", source_positions="end").to_dict()
    del stored["digit_positions"]
    assert ModelConfig.from_dict(stored).digit_positions == "none"
    assert ModelConfig(backend="memsizer").digit_positions == "abacus", "the adopted recipe is the default"


def test_sinusoid_abacus_projects_a_fixed_table_row_per_place(tokenizer):
    """abacus-sinusoid: a digit gains the learned projection of its place's fixed sinusoid row, so a
    place no training number had (row 12) still gets a defined, distinct embedding."""
    model = tiny_model("transformer", digit_positions="abacus-sinusoid")
    src = tokenizer.batch_questions(["What is the tens digit of 123456789012?"])
    positions = torch.arange(src.shape[1]).expand_as(src)
    with torch.no_grad():
        added = model._embed(src, positions, "encoder", digit_significance(src)) - model._embed(src, positions, "encoder")
        first = len("What is the tens digit of ")
        assert torch.allclose(added[0, first], model.digit_proj(sinusoidal_table(161, 32)[12]), atol=1e-5)
        assert torch.allclose(added[0, :first], torch.zeros(first, 32))
        assert not torch.allclose(added[0, first], added[0, first + 1])


def test_rotary_scores_depend_only_on_the_offset():
    """RoPE: a query at position i and a key at j score the same as at i + s and j + s."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)
    score = (rotate(q, 7) * rotate(k, 3)).sum(-1)
    assert torch.allclose(score, (rotate(q, 27) * rotate(k, 23)).sum(-1), atol=1e-5)
    assert not torch.allclose(score, (rotate(q, 7) * rotate(k, 4)).sum(-1), atol=1e-3), "the offset matters"
    assert torch.allclose(rotate(q, 0), q) and torch.allclose(rotate(q, 5).norm(), q.norm()), "a rotation"
    sequence = torch.randn(1, 2, 6, 16)
    assert torch.allclose(rotate(sequence)[:, :, 4:], rotate(sequence[:, :, 4:], 4)), "a cache's keys as rotated whole"


def takes(backend: str, mode: str) -> bool:
    """Whether the backend's attention takes relative positions of this mode at its default settings."""
    spec = registry.get(backend)
    return bool(spec.relative_roles(spec.settings(), mode))


@pytest.mark.parametrize("backend,mode", [(b, m) for b in BACKENDS for m in ("rope", "alibi") if takes(b, m)])
def test_relative_positions_keep_batching_decoding_and_storage_exact(backend, mode, tokenizer, tmp_path):
    model = tiny_model(backend, relative_positions=mode)
    src = tokenizer.batch_questions(QUESTIONS)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 98, (3, 5))], dim=1)
    steps, full = cached_and_full_logits(model, src, tgt_in)
    assert torch.allclose(steps, full, **TOL)
    with torch.no_grad():
        for i, q in enumerate(QUESTIONS):  # padding after a question changes nothing
            assert torch.allclose(full[i], model(tokenizer.batch_questions([q]), tgt_in[i:i + 1])[0][0], **TOL)
        plain = tiny_model(backend, relative_positions="none")
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain(src, tgt_in)[0], full, atol=1e-3), f"{mode} replaces the sinusoids"
    save_checkpoint(model, tmp_path, tokenizer, "float32")
    loaded, _, stored = load_checkpoint(tmp_path)
    assert stored["architecture"]["relative_positions"] == mode
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt_in)[0], full)


@pytest.mark.parametrize("backend,mode", [(b, m) for b in BACKENDS for m in ("rope", "alibi") if not takes(b, m)])
def test_relative_positions_are_refused_where_the_attention_cannot_take_them(backend, mode):
    with pytest.raises(ValueError, match=f"takes no '{mode}' relative positions"):
        tiny_config(backend, relative_positions=mode)
    with pytest.raises(ValueError, match="from the question's start"):
        tiny_config("transformer", relative_positions=mode, source_positions="end")


def test_alibi_lowers_each_score_by_its_heads_slope_times_the_distance():
    """The encoder's bias is -m_h |i - j| with the paper's slopes m_h = 2^(-8h/H); the decoder's
    is -m_h (i - j) over the keys it may see, with i counted from the first target token even
    when the earlier ones sit in the cache."""
    from models.transformer import SoftmaxAttention
    attention = SoftmaxAttention(tiny_config("transformer", relative_positions="alibi", n_heads=4), "causal")
    assert torch.allclose(attention.alibi_slopes.flatten(), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]))
    allowed = torch.ones(1, 3, dtype=torch.bool)
    bias = attention._alibi(allowed, torch.tensor([[2, 1, 0]]))  # the third query (past 2) against 3 keys
    assert torch.allclose(bias[1, 0], torch.tensor([-2 * 2 ** -4, -2 ** -4, 0.0]))
    assert torch.isinf(attention._alibi(~allowed, torch.tensor([[2, 1, 0]]))).all()
