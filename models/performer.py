"""Performer attention: FAVOR+ positive orthogonal random features (Choromanski et al., ICLR 2021,
"Rethinking Attention with Performers", arXiv 2009.14794), with SLiM's sub-linear-memory training
of causal layers (Likhosherstov et al., NeurIPS 2021, "Sub-Linear Memory: How to Make Performers
SLiM", arXiv 2012.11346). Official code: google-research/performer and google-research
slim_performer; lucidrains/performer-pytorch is a widely used port.

softmax(q.k / sqrt(dh)) is approximated by phi(q).phi(k) with, for x scaled by dh**-1/4,
    phi(x) = exp(w_i.x - |x|^2 / 2) / sqrt(m),  i = 1..m,
where the rows w_i are blocks of orthogonal Gaussian directions with chi(dh)-distributed norms.
Attention then costs O(T m dh) instead of O(T^2 dh):
  non-causal   out = D^-1 phi(Q) (phi(K)^T V),   D = phi(Q) phi(K)^T 1   (padding removed from phi(K))
  causal       the same with prefix sums over j <= t; decoding keeps (S = sum phi(k) v^T, z = sum phi(k)),
               a state of fixed size (B, H, m, dh) + (B, H, m) whatever the generated length.
Stabilisers subtract a constant from the exponent. It must be common to every key a query sees
(so it cancels in D^-1) and, in a causal layer, must not depend on future keys: queries use
their own row maximum, non-causal keys the maximum over the non-padding keys, causal keys a fixed
offset, the bound max_i |w_i|^2 / 2 >= w_i.x - |x|^2 / 2 less a headroom of KEY_HEADROOM: no key
feature can exceed exp(KEY_HEADROOM), and a fixed offset keeps the causal sums additive (decoding
adds to them; SLiM subtracts from them). The bound grows like dh / 2 while real exponents stay near
zero, so beyond MAX_HEAD_DIM float32 key features would underflow and the outputs silently go
wrong: the model refuses such head sizes.

SLiM (models/slim.py) trains the decoder slice by slice; `rewind` gives it the causal state before
a slice from the state after it.

Ours, settings: relative positions "rope" in the encoder as RoFormer's linear-attention form (Su et
al., 2021, section 3.4.3): out_t = sum_n (R_t phi(q_t)).(R_n phi(k_n)) v_n / sum_n phi(q_t).phi(k_n),
the features rotated by their positions in the numerator and the normaliser unrotated, so the
numerator depends on positions only through t - n and still factorises into sums over keys. The
decoder's self-attention can take a decay gate instead (causal_gate, below).
"""
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from models.backend import ROLES, AttentionState, Backend, carried
from models.transformer import rotate

# exp(64) keeps the causal sums of 16,384 keys (the longest measured) times 256 features below
# float32's overflow (~exp(88)) for values up to ~50, while lifting key features 64 nats away from
# underflow, room that large key norms (whose |x|^2 / 2 term lowers every exponent) need
KEY_HEADROOM = 64.0
# at dh 128 the bound is ~84-92; at dh 256 (~160-170) no headroom that cannot overflow keeps typical key
# features above float32's smallest normal (exp(-87)), so the outputs would be wrong (tests/models/test_performer.py)
MAX_HEAD_DIM = 128

# Causal training splits the sequence into blocks: exact prefix sums of phi(k) v^T across blocks,
# a masked quadratic product inside one. Block 1 is the pure prefix-sum form (memory T*m*dh per
# head), a block >= T the pure quadratic form (T^2); 64 keeps both terms small at any length.
CAUSAL_BLOCK = 64
CAUSAL_GATES = ("none", "decay")


def decay_rates(n_heads: int) -> torch.Tensor:
    """RetNet's per-head decays gamma_h = 1 - 2^(-5 - h): from 0.97 (a short memory) towards 1."""
    return 1 - 2.0 ** (-5 - torch.arange(n_heads, dtype=torch.float64))


def decayed_causal_attention(qf, kf, v, gamma, initial=None):
    """Causal linear attention with a per-head decay: out_t = phi(q_t) S_t / phi(q_t) z_t, where
    S_t = gamma S_{t-1} + phi(k_t) v_t^T and z_t = gamma z_{t-1} + phi(k_t), from (S, z) = `initial`
    (or zeros). qf, kf (B, H, T, m), v (B, H, T, dh), gamma (H,). Returns the output and the final
    (S, z). The masked quadratic form, O(T^2) per call: this task's targets are a few positions."""
    B, H, T, m = qf.shape
    t = torch.arange(T, device=qf.device, dtype=qf.dtype)
    log_gamma = torch.log(gamma.to(qf))[:, None, None]  # (H, 1, 1)
    distance = t[:, None] - t[None, :]  # (T, T): t - j
    decay = torch.exp(log_gamma * distance.clamp(min=0)) * (distance >= 0)  # (H, T, T): gamma^(t-j), j <= t
    scores = (qf @ kf.transpose(-1, -2)) * decay
    numerator, denominator = scores @ v, scores.sum(dim=-1)
    to_end = decay[:, -1]  # (H, T): gamma^(T-1-j)
    S_end = (kf * to_end[None, :, :, None]).transpose(-1, -2) @ v
    z_end = (kf * to_end[None, :, :, None]).sum(dim=2)
    if initial is not None:
        S0, z0 = initial
        carried = torch.exp(log_gamma[:, :, 0] * (t + 1))  # (H, T): gamma^(t+1), the start state's weight
        numerator = numerator + carried[None, :, :, None] * (qf @ S0)
        denominator = denominator + carried[None] * (qf @ z0[..., None])[..., 0]
        S_end = S_end + gamma.to(qf)[None, :, None, None] ** T * S0
        z_end = z_end + gamma.to(qf)[None, :, None] ** T * z0
    out = numerator / denominator.clamp(min=torch.finfo(denominator.dtype).tiny)[..., None]
    return out, (S_end, z_end)


@dataclass(frozen=True)
class PerformerSettings:
    """features: m random features per head. redraw_interval: training forward passes between
    redraws of the features (0 = never). The paper and both reference codes redraw (FAVOR+'s
    estimator is unbiased for any one draw, and redrawing averages the draws' bias out over
    training); ours defaults to never because a redraw every 100 passes kept a proxy model from 99%
    for 1,000+ steps, while the runs that reach the target finish before a redraw at 1,000 would
    happen (benchmarks/REPORT.md, training speed)."""

    features: int = 256
    redraw_interval: int = 0
    # "decay": a per-head gate in the decoder's self-attention, S_t = gamma_h S_{t-1} + phi(k_t) v_t^T
    # (z likewise), with RetNet's gammas (Sun et al., 2023): the recurrent form of ALiBi's distance
    # penalty, which linear attention cannot take as a score bias, keeping the fixed-size state
    causal_gate: str = "none"

    # what checkpoints stored before SLiM became a training option (training.train --slim-slice)
    RETIRED: ClassVar[tuple] = ("slim_chunks",)

    def __post_init__(self):
        if self.features < 1:
            raise ValueError(f"features must be positive, got {self.features}")
        if self.redraw_interval < 0:
            raise ValueError(f"redraw_interval must be >= 0, got {self.redraw_interval}")
        if self.causal_gate not in CAUSAL_GATES:
            raise ValueError(f"causal_gate must be one of {', '.join(CAUSAL_GATES)}, got {self.causal_gate!r}")


def orthogonal_features(m: int, dh: int, generator: torch.Generator | None = None,
                        dtype=torch.float32) -> torch.Tensor:
    """m x dh projection: stacked blocks of dh orthonormal rows (QR of Gaussian matrices), each row
    rescaled to a chi(dh) norm so that every row is marginally N(0, I) like an unstructured draw."""
    blocks = []
    for _ in range(math.ceil(m / dh)):
        gaussian = torch.randn(dh, dh, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # QR's sign convention biases the directions; fixing the signs makes Q uniformly (Haar)
        # distributed, which the unbiasedness of the estimator E[phi(q).phi(k)] = exp(q.k) needs
        q = q * torch.sign(torch.diagonal(r))[None, :]
        blocks.append(q.T)  # rows orthonormal
    directions = torch.cat(blocks)[:m]
    norms = torch.randn(m, dh, generator=generator, dtype=torch.float64).norm(dim=1)  # chi(dh)
    return (directions * norms[:, None]).to(dtype)


def positive_features(x: torch.Tensor, projection: torch.Tensor, stabiliser=None) -> torch.Tensor:
    """phi(x) * exp(-stabiliser); stabiliser None: each row's own maximum (queries: a per-query
    constant cancels between numerator and denominator).

    Everything subtracted is constant along a row (|x|^2 / 2, the stabiliser, log sqrt(m) for the
    1/sqrt(m) scale), so it is gathered into one (.., T, 1) offset: two passes over the (.., T, m)
    features (subtract, exp) instead of four. With the row's own maximum the |x|^2 / 2 term cancels."""
    projected = x @ projection.T
    if stabiliser is None:
        offset = projected.amax(dim=-1, keepdim=True).detach()
    else:
        offset = (x * x).sum(dim=-1, keepdim=True) / 2 + stabiliser
    return torch.exp(projected - (offset + 0.5 * math.log(projection.shape[0])))


def exponent_bound(projection: torch.Tensor) -> torch.Tensor:
    """max_i |w_i|^2 / 2: no w_i.x - |x|^2/2 exceeds it for any x (the maximum is at x = w_i)."""
    return (projection * projection).sum(dim=-1).max() / 2


def causal_key_offset(projection: torch.Tensor) -> torch.Tensor:
    """The fixed stabiliser of causal keys: the exponent bound less KEY_HEADROOM (module docstring)."""
    return exponent_bound(projection) - KEY_HEADROOM


def causal_linear_attention(qf, kf, v, block: int = CAUSAL_BLOCK, initial=None):
    """Causal D^-1 phi(Q) (prefix sums of phi(K) V^T): qf, kf (B, H, T, m), v (B, H, T, dh).

    `initial` is the (S, z) of positions before this sequence (decoding), or None. Returns the
    output (B, H, T, dh) and the final (S, z). Exact for any `block`: prefix sums across blocks,
    masked quadratic inside each (block = 1: pure prefix sums; block >= T: pure quadratic)."""
    B, H, T, m = qf.shape
    dh = v.shape[-1]
    block = max(1, min(block, T))
    n = math.ceil(T / block)
    pad = n * block - T
    if pad:  # zero rows: padded keys add nothing; padded queries are cut off below
        qf, kf, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (qf, kf, v))
    qc, kc, vc = (t.reshape(B, H, n, block, t.shape[-1]) for t in (qf, kf, v))
    block_kv = kc.transpose(-1, -2) @ vc  # (B, H, n, m, dh)
    block_z = kc.sum(dim=-2)  # (B, H, n, m)
    if initial is None:
        S0, z0 = qf.new_zeros(B, H, m, dh), qf.new_zeros(B, H, m)
    else:
        S0, z0 = initial
    # state before each block: everything earlier (exclusive prefix sum over blocks)
    S_before = torch.cat([S0[:, :, None], S0[:, :, None] + block_kv.cumsum(dim=2)[:, :, :-1]], dim=2)
    z_before = torch.cat([z0[:, :, None], z0[:, :, None] + block_z.cumsum(dim=2)[:, :, :-1]], dim=2)
    scores = (qc @ kc.transpose(-1, -2)).tril()  # (B, H, n, block, block): j <= t inside the block
    numerator = qc @ S_before + scores @ vc
    denominator = (qc @ z_before[..., None])[..., 0] + scores.sum(dim=-1)
    out = numerator / denominator.clamp(min=torch.finfo(denominator.dtype).tiny)[..., None]
    out = out.reshape(B, H, n * block, dh)[:, :, :T]
    S_end, z_end = S_before[:, :, -1] + block_kv[:, :, -1], z_before[:, :, -1] + block_z[:, :, -1]
    return out, (S_end, z_end)


@dataclass
class FeatureSums(AttentionState):
    """Causal state: S = sum phi(k) v^T (B, H, m, dh) and z = sum phi(k) (B, H, m) over the
    positions decoded so far (fixed size). Cross-attention keeps the same sums over the
    question's encoder output, computed once per question."""

    kv: torch.Tensor | None = None
    normaliser: torch.Tensor | None = None


class PerformerAttention(nn.Module):
    """Multi-head FAVOR+ attention with Q/K/V/output projections; `role` is encoder, causal or cross."""

    def __init__(self, config, role: str):
        super().__init__()
        assert role in ROLES, f"unknown attention role {role!r}"
        self.role = role
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        if self.head_dim > MAX_HEAD_DIM:
            raise ValueError(f"the Performer's head size d_model / n_heads = {self.head_dim} is above "
                             f"{MAX_HEAD_DIM}: its causal key features would underflow in float32 and the "
                             f"outputs go wrong; use more heads (n_heads >= {-(-config.d_model // MAX_HEAD_DIM)})")
        settings = config.settings
        self.features = settings.features
        self.redraw_interval = settings.redraw_interval
        # relative positions "rope" in the encoder: the kernel features rotated (module docstring)
        self.rotary = role == "encoder" and config.relative_in("encoder")
        if self.rotary and self.features % 2:
            raise ValueError(f"rotary positions turn the kernel features in pairs: features must be even, "
                             f"got {self.features}")
        # the gate's decays: a constant of the head count, so not stored in checkpoints
        self.register_buffer("decay", decay_rates(self.n_heads).float()
                             if role == "causal" and settings.causal_gate == "decay" else None, persistent=False)
        d = config.d_model
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        # a buffer, so the features travel in the checkpoint and a served model is deterministic
        self.register_buffer("projection", orthogonal_features(self.features, self.head_dim))
        self.training_calls = 0  # training forward passes since the last redraw

    def new_state(self) -> FeatureSums:
        return FeatureSums()

    def resume_training(self, passes: int) -> None:
        """Continue the redraw schedule of a run resumed after `passes` training forward passes
        (the features themselves come back with the state dict)."""
        self.training_calls = passes % self.redraw_interval if self.redraw_interval else 0

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        self.projection.copy_(orthogonal_features(self.features, self.head_dim, generator).to(self.projection))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, H, T, dh)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def _kernel_heads(self, x: torch.Tensor) -> torch.Tensor:
        """Queries/keys scaled by dh**-1/4 each, so that phi(q).phi(k) ~ exp(q.k / sqrt(dh))."""
        return self._heads(x) * self.head_dim ** -0.25

    def source_sums(self, k, v, pad):
        """phi(K)^T V (B, H, m, dh) and phi(K)^T 1 (B, H, m) over the non-padding keys (rotary: the
        first with each phi(k_n) rotated by its position n). One stabiliser per question and head
        (the largest exponent over its real keys); as in positive_features, the per-key constants
        form one (B, H, S, 1) offset, +inf at padding, whose features exp turns to exactly 0."""
        projected = k @ self.projection.T  # (B, H, S, m)
        half_norm = (k * k).sum(dim=-1, keepdim=True) / 2  # (B, H, S, 1)
        padding = pad[:, None, :, None]
        key_maxima = (projected.amax(dim=-1, keepdim=True) - half_norm).masked_fill(padding, float("-inf"))
        stabiliser = key_maxima.amax(dim=(2, 3), keepdim=True).detach()  # (B, H, 1, 1)
        offset = (half_norm + stabiliser + 0.5 * math.log(self.features)).masked_fill(padding, float("inf"))
        kf = torch.exp(projected - offset)
        return (rotate(kf) if self.rotary else kf).transpose(-1, -2) @ v, kf.sum(dim=2)

    def forward(self, x, context=None, context_pad=None, state: FeatureSums | None = None):
        """Attend from x (B, T, d); `state` holds the feature sums across decoding steps."""
        if self.training and self.redraw_interval:
            self.training_calls += 1
            if self.training_calls >= self.redraw_interval:
                self.redraw_features()
                self.training_calls = 0
        B, T, d = x.shape
        q = self._kernel_heads(self.q_proj(x))
        if self.role == "causal":
            out = self._causal(q, self._kernel_heads(self.k_proj(x)), self._heads(self.v_proj(x)), state)
        else:
            if self.role == "cross" and state is not None and state.kv is not None:
                kv, normaliser = state.kv, state.normaliser
            else:
                source = x if self.role == "encoder" else context
                k, v = self._kernel_heads(self.k_proj(source)), self._heads(self.v_proj(source))
                kv, normaliser = self.source_sums(k, v, context_pad)
                if state is not None:
                    state.kv, state.normaliser = kv, normaliser
            qf = positive_features(q, self.projection)
            denominator = (qf @ normaliser[..., None]).clamp(min=torch.finfo(qf.dtype).tiny)
            out = ((rotate(qf) if self.rotary else qf) @ kv) / denominator
        return self.out_proj(out.transpose(1, 2).reshape(B, T, d))

    def _causal(self, q, k, v, state):
        if self.decay is not None:
            return self._gated(q, k, v, state)
        if state is None:  # training's parallel pass: no state outlives it, autocast may round freely
            return causal_linear_attention(positive_features(q, self.projection),
                                           self._causal_key_features(k), v)[0]
        # a carried state (decoding, SLiM's slices) stays float32 under autocast: SLiM rebuilds a
        # slice's start state by subtracting its terms, which in bfloat16 loses the prefix
        with torch.autocast(q.device.type, enabled=False):
            q, k, v = carried(q), carried(k), carried(v)
            kf, qf = self._causal_key_features(k), positive_features(q, self.projection)
            if q.shape[2] == 1:
                # one decoding step: update the sums, read them out (no block bookkeeping, which
                # would copy the (B, H, m, dh) state several times per step)
                S, z = kf.transpose(-1, -2) @ v, kf[:, :, 0]
                if state.kv is not None:
                    S, z = state.kv + S, state.normaliser + z
                state.kv, state.normaliser = S, z
                return (qf @ S) / (qf @ z[..., None]).clamp(min=torch.finfo(qf.dtype).tiny)
            initial = None if state.kv is None else (state.kv, state.normaliser)
            out, (state.kv, state.normaliser) = causal_linear_attention(qf, kf, v, initial=initial)
            return out

    def _gated(self, q, k, v, state):
        """The decay-gated causal form (decayed_causal_attention); a carried state stays float32."""
        with nullcontext() if state is None else torch.autocast(q.device.type, enabled=False):
            if state is not None:
                q, k, v = carried(q), carried(k), carried(v)
            qf, kf = positive_features(q, self.projection), self._causal_key_features(k)
            initial = None if state is None or state.kv is None else (state.kv, state.normaliser)
            out, (S, z) = decayed_causal_attention(qf, kf, v, self.decay, initial)
            if state is not None:
                state.kv, state.normaliser = S, z
            return out

    def _causal_key_features(self, k: torch.Tensor) -> torch.Tensor:
        """phi(k) with the fixed causal stabiliser, so that the sums over positions are additive."""
        return positive_features(k, self.projection, causal_key_offset(self.projection).detach())

    @torch.no_grad()
    def rewind(self, x: torch.Tensor, after: FeatureSums) -> FeatureSums:
        """The causal state before the positions x (B, T, d) from the state after them: the fixed
        key stabiliser makes the sums additive, so the positions' own terms are subtracted. The
        projections run as the forward pass ran them (under its autocast), the sums in float32."""
        assert self.role == "causal", "only causal attention carries a state along the target"
        if self.decay is not None:  # rewinding would divide by gamma^T; check_slim refuses it first
            raise ValueError("the decay gate's state is not a plain sum: SLiM cannot rewind it")
        k, v = self._kernel_heads(self.k_proj(x)), self._heads(self.v_proj(x))
        with torch.autocast(x.device.type, enabled=False):
            kf, v = self._causal_key_features(carried(k)), carried(v)
            return replace(after, kv=after.kv - kf.transpose(-1, -2) @ v, normaliser=after.normaliser - kf.sum(dim=2))


def configuration(config) -> str:
    s = config.settings
    redraws = f"redrawn every {s.redraw_interval} passes" if s.redraw_interval else \
        "drawn once (the paper and both reference codes redraw them)"
    gate = (" Decoder self-attention gated by per-head decays (ours: the recurrent form of ALiBi)."
            if s.causal_gate == "decay" else "")
    rope = (" Encoder features rotated by position in the numerator (ours: RoFormer's linear form)."
            if config.relative_in("encoder") else "")
    return f"{s.features} positive orthogonal random features per head, {redraws}.{rope}{gate}"


def relative_roles(settings, mode: str) -> tuple[str, ...]:
    """rope: the encoder's kernel features rotated, in the numerator only (the form that factorises);
    the causal role's state is a plain sum, and ALiBi's score bias has no factorised form at all."""
    return ("encoder",) if mode == "rope" else ()


BACKEND = Backend(
    name="performer",
    display_name="Performer",
    paper="Choromanski et al., ICLR 2021, \"Rethinking Attention with Performers\" (arXiv 2009.14794); "
          "SLiM training: Likhosherstov et al., NeurIPS 2021 (arXiv 2012.11346)",
    summary="FAVOR+ attention: positive orthogonal random features approximate softmax in linear time; "
            "decoding keeps a fixed-size state of feature sums.",
    attention=PerformerAttention,
    settings=PerformerSettings,
    configuration=configuration,
    relative_roles=relative_roles,
)
