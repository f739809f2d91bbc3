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
their own row maximum, non-causal keys the maximum over the non-padding keys, causal keys the
fixed bound max_i |w_i|^2 / 2 >= w_i.x - |x|^2 / 2 (so no key feature ever exceeds 1).
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from models.backend import ROLES, AttentionState, Backend

# Causal training splits the sequence into blocks: exact prefix sums of phi(k) v^T across blocks,
# a masked quadratic product inside one. Block 1 is the pure prefix-sum form (memory T*m*dh per
# head), a block >= T the pure quadratic form (T^2); 64 keeps both terms small at any length.
CAUSAL_BLOCK = 64


@dataclass(frozen=True)
class PerformerSettings:
    """features: m random features per head. redraw_interval: training forward passes between
    redraws of the features (0 = never: measured best here, benchmarks/ANALYSIS.md; a redraw every
    100 passes kept a proxy model from 99% for 1,000+ steps, and the runs that reach the target
    finish before a redraw at 1,000 would happen). slim_chunks: train causal layers with SLiM in
    this many chunks (0 = plain autograd); it changes memory, never the result."""

    features: int = 256
    redraw_interval: int = 0
    slim_chunks: int = 0

    def __post_init__(self):
        if self.features < 1:
            raise ValueError(f"features must be positive, got {self.features}")
        if self.redraw_interval < 0 or self.slim_chunks < 0:
            raise ValueError(f"redraw_interval and slim_chunks must be >= 0, got "
                             f"{self.redraw_interval} and {self.slim_chunks}")


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


def _causal_chunk(q, k, v, projection, key_stabiliser, S0, z0):
    """One chunk of causal FAVOR+ from raw (scaled) q, k, v and the state before it."""
    qf, kf = positive_features(q, projection), positive_features(k, projection, key_stabiliser)
    return causal_linear_attention(qf, kf, v, initial=(S0, z0))


class SlimCausalAttention(torch.autograd.Function):
    """SLiM: causal FAVOR+ over `chunks` chunks without a graph, keeping only the chunk-boundary
    states (S, z); the backward pass walks the chunks in reverse, recomputing each from its
    start state and back-propagating into it, so gradients are exact. Besides q, k, v the
    memory kept is chunks x (m x dh + m) per head instead of the per-position features."""

    @staticmethod
    def forward(ctx, q, k, v, projection, key_stabiliser, chunks: int):
        B, H, T, dh = v.shape
        m = projection.shape[0]
        bounds = [len(piece) for piece in torch.arange(T).tensor_split(chunks)]
        S, z = q.new_zeros(B, H, m, dh), q.new_zeros(B, H, m)
        starts, outs, begin = [], [], 0
        for size in bounds:
            starts.append((S, z))
            end = begin + size
            out, (S, z) = _causal_chunk(q[:, :, begin:end], k[:, :, begin:end], v[:, :, begin:end],
                                        projection, key_stabiliser, S, z)
            outs.append(out)
            begin = end
        ctx.bounds = bounds
        ctx.save_for_backward(q, k, v, projection, key_stabiliser,
                              torch.stack([s for s, _ in starts]), torch.stack([z for _, z in starts]))
        return torch.cat(outs, dim=2)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, projection, key_stabiliser, S_starts, z_starts = ctx.saved_tensors
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dS, dz = torch.zeros_like(S_starts[0]), torch.zeros_like(z_starts[0])
        ends = list(torch.tensor(ctx.bounds).cumsum(0).tolist())
        for index in reversed(range(len(ctx.bounds))):
            end = ends[index]
            begin = end - ctx.bounds[index]
            with torch.enable_grad():
                inputs = [t[:, :, begin:end].detach().requires_grad_() for t in (q, k, v)]
                S0 = S_starts[index].detach().requires_grad_()
                z0 = z_starts[index].detach().requires_grad_()
                out, (S1, z1) = _causal_chunk(*inputs, projection, key_stabiliser, S0, z0)
                grads = torch.autograd.grad((out, S1, z1), (*inputs, S0, z0),
                                            (grad_out[:, :, begin:end], dS, dz), allow_unused=True)
            for target, grad in zip((dq, dk, dv), grads[:3]):
                if grad is not None:
                    target[:, :, begin:end] = grad
            dS, dz = grads[3], grads[4]  # flows into the previous chunk's end state
        return dq, dk, dv, None, None, None


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
        settings = config.settings
        self.features = settings.features
        self.redraw_interval = settings.redraw_interval
        self.slim_chunks = settings.slim_chunks
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
        """phi(K)^T V (B, H, m, dh) and phi(K)^T 1 (B, H, m) over the non-padding keys. One stabiliser
        per question and head (the largest exponent over its real keys); as in positive_features,
        the per-key constants form one (B, H, S, 1) offset, +inf at padding, whose features exp
        turns to exactly 0."""
        projected = k @ self.projection.T  # (B, H, S, m)
        half_norm = (k * k).sum(dim=-1, keepdim=True) / 2  # (B, H, S, 1)
        padding = pad[:, None, :, None]
        key_maxima = (projected.amax(dim=-1, keepdim=True) - half_norm).masked_fill(padding, float("-inf"))
        stabiliser = key_maxima.amax(dim=(2, 3), keepdim=True).detach()  # (B, H, 1, 1)
        offset = (half_norm + stabiliser + 0.5 * math.log(self.features)).masked_fill(padding, float("inf"))
        kf = torch.exp(projected - offset)
        return kf.transpose(-1, -2) @ v, kf.sum(dim=2)

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
            out = (qf @ kv) / denominator
        return self.out_proj(out.transpose(1, 2).reshape(B, T, d))

    def _causal(self, q, k, v, state):
        key_stabiliser = exponent_bound(self.projection).detach()
        if self.training and self.slim_chunks and state is None and torch.is_grad_enabled():
            chunks = min(self.slim_chunks, q.shape[2])
            return SlimCausalAttention.apply(q, k, v, self.projection, key_stabiliser, chunks)
        kf = positive_features(k, self.projection, key_stabiliser)
        qf = positive_features(q, self.projection)
        if state is not None and q.shape[2] == 1:
            # one decoding step: update the sums, read them out (no block bookkeeping, which
            # would copy the (B, H, m, dh) state several times per step)
            S, z = kf.transpose(-1, -2) @ v, kf[:, :, 0]
            if state.kv is not None:
                S, z = state.kv + S, state.normaliser + z
            denominator = (qf @ z[..., None]).clamp(min=torch.finfo(qf.dtype).tiny)
            state.kv, state.normaliser = S, z
            return (qf @ S) / denominator
        initial = None if state is None or state.kv is None else (state.kv, state.normaliser)
        out, (S, z) = causal_linear_attention(qf, kf, v, initial=initial)
        if state is not None:
            state.kv, state.normaliser = S, z
        return out


BACKEND = Backend(
    name="performer",
    display_name="Performer",
    paper="Choromanski et al., ICLR 2021, \"Rethinking Attention with Performers\" (arXiv 2009.14794); "
          "SLiM training: Likhosherstov et al., NeurIPS 2021 (arXiv 2012.11346)",
    summary="FAVOR+ attention: positive orthogonal random features approximate softmax in linear time; "
            "decoding keeps a fixed-size state of feature sums.",
    attention=PerformerAttention,
    settings=PerformerSettings,
)
