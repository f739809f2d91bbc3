"""Performer (FAVOR+) and SLiM, pinned against exact attention in float64."""
import math

import pytest
import torch

from models.performer import (MAX_HEAD_DIM, PerformerAttention, causal_linear_attention, exponent_bound,
                              orthogonal_features, positive_features)
from tests.conftest import tiny_config, tiny_model
from tests.models.test_models import causal_forms

F64 = torch.float64


def random_qkv(seed, B=2, H=2, T=9, dh=8, scale=0.6):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, dh, generator=g, dtype=F64) * scale for _ in range(2))
    return q, k, torch.randn(B, H, T, dh, generator=g, dtype=F64)


def favor(q, k, v, m, seed, causal):
    """FAVOR+ estimate of softmax(q k^T / sqrt(dh)) v with m features."""
    dh = q.shape[-1]
    w = orthogonal_features(m, dh, torch.Generator().manual_seed(seed), F64)
    qs, ks = q * dh ** -0.25, k * dh ** -0.25
    qf, kf = positive_features(qs, w), positive_features(ks, w, exponent_bound(w))
    if causal:
        return causal_linear_attention(qf, kf, v)[0]
    return (qf @ (kf.transpose(-1, -2) @ v)) / (qf @ kf.sum(dim=2)[..., None])


def exact_softmax(q, k, v, causal):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[2]
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("causal", [False, True])
def test_favor_converges_to_softmax_attention_as_features_grow(causal):
    q, k, v = random_qkv(0)
    exact = exact_softmax(q, k, v, causal)
    error = {m: sum((favor(q, k, v, m, seed, causal) - exact).abs().mean().item() for seed in range(4)) / 4
             for m in (64, 4096)}
    assert error[4096] < 0.3 * error[64], error  # Monte Carlo: ~1/sqrt(m), i.e. 8x less in expectation
    assert error[4096] < 0.02, error


def test_features_are_orthogonal_blocks_with_chi_norms():
    dh, m = 16, 64
    w = orthogonal_features(m, dh, torch.Generator().manual_seed(3), F64)
    assert w.shape == (m, dh)
    for block in w.split(dh):
        directions = block / block.norm(dim=1, keepdim=True)
        assert torch.allclose(directions @ directions.T, torch.eye(dh, dtype=F64), atol=1e-10)
    norms = orthogonal_features(4096, dh, torch.Generator().manual_seed(4), F64).norm(dim=1)
    assert abs(norms.pow(2).mean().item() - dh) < 0.1 * dh  # chi(dh): E|w|^2 = dh


def test_causal_prefix_sums_equal_the_masked_quadratic_form_and_any_block():
    q, k, v = random_qkv(1, T=11)
    w = orthogonal_features(16, 8, torch.Generator().manual_seed(0), F64)
    qf, kf = positive_features(q, w), positive_features(k, w, exponent_bound(w))
    scores = (qf @ kf.transpose(-1, -2)).tril()
    quadratic = (scores @ v) / scores.sum(dim=-1, keepdim=True)
    for block in (1, 3, 4, 11, 64):  # 1: pure prefix sums; >= T: one quadratic block
        out, (S, z) = causal_linear_attention(qf, kf, v, block=block)
        assert torch.allclose(out, quadratic, atol=1e-12), block
        assert torch.allclose(S, kf.transpose(-1, -2) @ v, atol=1e-12) and torch.allclose(z, kf.sum(dim=2))


def attention_module(role, **settings):
    torch.manual_seed(2)
    config = tiny_config("performer", settings={"features": 32, "redraw_interval": 0, **settings})
    module = PerformerAttention(config, role).double().eval()
    return module


def test_recurrent_decoding_equals_the_parallel_causal_form():
    module = attention_module("causal")
    x = torch.randn(2, 10, 32, dtype=F64)
    with torch.no_grad():
        full = module(x)
        state = module.new_state()
        steps = torch.cat([module(x[:, t:t + 1], state=state) for t in range(10)], dim=1)
        assert state.kv.shape == (2, 4, 32, 8) and state.normaliser.shape == (2, 4, 32)
        chunked_state = module.new_state()
        chunked = torch.cat([module(part, state=chunked_state) for part in x.split([3, 1, 6], dim=1)], dim=1)
    assert torch.allclose(steps, full, atol=1e-12) and torch.allclose(chunked, full, atol=1e-12)


def test_causal_layer_never_sees_the_future_even_an_extreme_one():
    """A max-over-all-keys stabiliser would let a huge future key change (underflow) earlier outputs."""
    module = attention_module("causal")
    x = torch.randn(1, 8, 32, dtype=F64)
    future = x.clone()
    future[:, 5:] *= 50.0
    with torch.no_grad():
        assert torch.equal(module(x)[:, :5], module(future)[:, :5])
        module.float()
        assert torch.isfinite(module(future.float())).all(), "the fixed key bound keeps float32 finite"


@pytest.mark.parametrize("role", ["encoder", "cross"])
def test_padding_is_removed_from_the_keys(role):
    module = attention_module(role)
    x, context = torch.randn(2, 6, 32, dtype=F64), torch.randn(2, 9, 32, dtype=F64)
    source = x if role == "encoder" else context
    pad = torch.zeros(2, source.shape[1], dtype=torch.bool)
    pad[1, 5:] = True
    noisy = source.clone()
    noisy[1, 5:] = 100 * torch.randn_like(noisy[1, 5:])  # what padding holds must not matter
    with torch.no_grad():
        if role == "encoder":
            a, b = module(x, context_pad=pad), module(noisy, context_pad=pad)
            a, b = a[:, :5], b[:, :5]
            alone = module(x[1:, :5], context_pad=pad[1:, :5])
        else:
            a, b = module(x, context, pad), module(x, noisy, pad)
            alone = module(x[1:], context[1:, :5], pad[1:, :5])
    assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(a[1], alone[0], atol=1e-12), "a padded row equals the same row alone"


def test_cross_attention_computes_the_source_sums_once_per_question():
    module = attention_module("cross")
    context, pad = torch.randn(2, 9, 32, dtype=F64), torch.zeros(2, 9, dtype=torch.bool)
    calls = []
    module.k_proj.register_forward_hook(lambda *_: calls.append(1))
    state = module.new_state()
    with torch.no_grad():
        outs = [module(torch.randn(2, 1, 32, dtype=F64), context, pad, state=state) for _ in range(5)]
    assert len(calls) == 1 and all(o.shape == (2, 1, 32) for o in outs)


@pytest.mark.parametrize("dh", [32, 64, 128])
def test_causal_attention_in_float32_matches_float64_at_every_accepted_head_size(dh):
    """The fixed key offset (bound less a headroom) keeps key features inside float32's range at every
    head size the model accepts; a bound without headroom underflowed at dh 128 (errors ~3)."""
    torch.manual_seed(dh)
    config = tiny_config("performer", d_model=2 * dh, n_heads=2, settings={"features": 256})
    module = PerformerAttention(config, "causal").double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 2 * dh ** -0.5)  # projections of unit-scale inputs to O(1)-O(2) entries
    x = torch.randn(2, 48, 2 * dh, dtype=F64)
    with torch.no_grad():
        exact = module(x)
        single = module.float()(x.float()).double()
    assert exact.abs().mean() > 0.1, "outputs of O(1), or the comparison means nothing"
    assert (single - exact).abs().max() < 1e-3, (single - exact).abs().max()


def test_head_sizes_beyond_float32s_range_are_refused():
    with pytest.raises(ValueError, match="head size .* 256 is above 128"):
        PerformerAttention(tiny_config("performer", d_model=512, n_heads=2), "causal")
    assert MAX_HEAD_DIM == 128
    PerformerAttention(tiny_config("performer", d_model=512, n_heads=4), "causal")  # dh 128 is accepted


def test_rewind_recovers_the_state_before_a_slice():
    """SLiM's rebuild: the state after 9 positions, less the last 4's terms, is the state after 5."""
    module = attention_module("causal")
    x = torch.randn(2, 9, 32, dtype=F64)
    with torch.no_grad():
        after_five, after_nine = module.new_state(), module.new_state()
        module(x[:, :5], state=after_five)
        module(x, state=after_nine)
        rewound = module.rewind(x[:, 5:], after_nine)
    assert torch.allclose(rewound.kv, after_five.kv, atol=1e-9) and torch.allclose(
        rewound.normaliser, after_five.normaliser, atol=1e-9)


def test_features_are_buffers_redrawn_on_schedule_and_only_in_training():
    module = attention_module("causal", redraw_interval=3).float()
    assert "projection" in dict(module.named_buffers()) and "projection" in module.state_dict()
    x = torch.randn(1, 4, 32)
    before = module.projection.clone()
    with torch.no_grad():
        for _ in range(5):
            module(x)  # eval mode: served models are deterministic
        assert torch.equal(module.projection, before)
        module.train()
        module(x), module(x)
        assert torch.equal(module.projection, before)
        module(x)
    assert not torch.equal(module.projection, before), "the third training pass redraws"


def test_a_resumed_run_keeps_the_redraw_schedule():
    """Resuming after 7 passes with interval 3: the next redraw comes at pass 9, two passes on."""
    model = tiny_model("performer", settings={"features": 32, "redraw_interval": 3}).train()
    src = torch.randint(3, 20, (1, 5))
    model.resume_training(7)
    layers = [m for m in model.modules() if isinstance(m, PerformerAttention)]
    before = [m.projection.clone() for m in layers]
    with torch.no_grad():
        model(src, src[:, :2])  # pass 8
        assert all(torch.equal(m.projection, b) for m, b in zip(layers, before))
        model(src, src[:, :2])  # pass 9
    assert not any(torch.equal(m.projection, b) for m, b in zip(layers, before))


GATED = {"features": 32, "causal_gate": "decay"}


def test_the_decay_gate_is_its_recurrence_in_every_form():
    """Parallel, step by step and in chunks: the same outputs as the loop S_t = gamma S_{t-1} + phi(k_t) v_t^T,
    z_t = gamma z_{t-1} + phi(k_t), out_t = phi(q_t) S_t / phi(q_t) z_t; and not the ungated outputs."""
    module = PerformerAttention(tiny_config("performer", settings=GATED), "causal").double().eval()
    x = torch.randn(2, 10, 32, dtype=F64)
    with torch.no_grad():
        full, steps, chunked, state = causal_forms(module, x)
        q, k, v = (module._kernel_heads(module.q_proj(x)), module._kernel_heads(module.k_proj(x)),
                   module._heads(module.v_proj(x)))
        qf, kf = positive_features(q, module.projection), module._causal_key_features(k)
        gamma = module.decay.double()[None, :, None]
        S, z, loop = 0, 0, []
        for t in range(10):
            S = gamma[..., None] * S + kf[:, :, t, :, None] * v[:, :, t, None, :]
            z = gamma * z + kf[:, :, t]
            loop.append((qf[:, :, t, None] @ S)[:, :, 0] / (qf[:, :, t] * z).sum(-1, keepdim=True))
        loop = torch.stack(loop, dim=2)
        loop_out = module.out_proj(loop.transpose(1, 2).reshape(2, 10, 32))
    assert state.kv.shape == (2, 4, 32, 8), "the gated state keeps its fixed size"
    assert torch.allclose(full, loop_out, atol=1e-12)
    assert torch.allclose(steps, full, atol=1e-12) and torch.allclose(chunked, full, atol=1e-12)
    ungated = PerformerAttention(tiny_config("performer", settings={"features": 32}), "causal").double().eval()
    ungated.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert not torch.allclose(ungated(x), full, atol=1e-6)


def test_slim_refuses_the_gate():
    from models.slim import check_slim
    with pytest.raises(ValueError, match="decay gate"):
        check_slim(tiny_model("performer", settings=GATED))


def test_rotary_encoder_features_are_roformers_linear_form():
    """relative_positions "rope" in the Performer's encoder: out_t = sum_n (R_t phi(q_t)).(R_n phi(k_n)) v_n /
    sum_n phi(q_t).phi(k_n), written out per query; the numerator's weights depend on t - n only."""
    from models.transformer import rotate
    config = tiny_config("performer", settings={"features": 32}, relative_positions="rope")
    module = PerformerAttention(config, "encoder").double().eval()
    assert module.rotary and not PerformerAttention(config, "cross").rotary
    x = torch.randn(2, 7, 32, dtype=F64)
    pad = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    with torch.no_grad():
        got = module(x, context_pad=pad)
        q, k = module._kernel_heads(module.q_proj(x)), module._kernel_heads(module.k_proj(x))
        v = module._heads(module.v_proj(x))
        # one constant key stabiliser: it cancels between numerator and denominator
        qf, kf = positive_features(q, module.projection), positive_features(k, module.projection,
                                                                               exponent_bound(module.projection))
        weights = rotate(qf) @ rotate(kf).transpose(-1, -2)  # (B, H, T, S): R_t phi(q_t) . R_n phi(k_n)
        normaliser = qf @ kf.transpose(-1, -2)
        keep = ~pad[:, None, None, :]
        heads = ((weights * keep) @ v) / (normaliser * keep).sum(-1, keepdim=True)
        want = module.out_proj(heads.transpose(1, 2).reshape(2, 7, 32))
        assert torch.allclose(got[~pad], want[~pad], atol=1e-10)
        # relative: shifting every position by 3 leaves the numerator's weights as they were
        shifted = rotate(qf, 3) @ rotate(kf, 3).transpose(-1, -2)
        assert torch.allclose(shifted, weights, atol=1e-10)
    from models.performer import configuration
    assert "Encoder features rotated by position" in configuration(config)
    assert "rotated" not in configuration(tiny_config("performer"))
    with pytest.raises(ValueError, match="features must be even"):
        PerformerAttention(tiny_config("performer", settings={"features": 31}, relative_positions="rope"), "encoder")
