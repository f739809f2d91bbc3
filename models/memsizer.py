"""MemSizer attention (Zhang & Cai, EMNLP 2022, "Linearizing Transformers with Key-Value Memory",
arXiv 2203.12644; official code jcyk/memsizer).

Keys are a learned memory of k slots per head (Phi, the query projection d -> H*k); the
values are a source memory S = n**-0.5 * sum_j LN(W_l x_j)^T LN(W_r x_j) of shape (k, d).
A query position reads out mean_over_heads(softmax_k(Phi y)) @ S. No output projection.
Causal decoder self-attention uses t**-0.5 * the running sum over the prefix, so decoding
keeps a fixed-size state (B, k, d) per layer instead of a cache that grows.

Ours, a setting (`causal_gate="decay"`): a decay gate on the causal running sum, slot by slot,
S_t[i] = gamma_i S_{t-1}[i] + k_t[i] v_t, with RetNet's multi-scale gammas over the causal_k slots
(Sun et al., 2023): the recurrent form of ALiBi's distance penalty, with the state's fixed size.
The length scale t**-0.5 becomes n_i(t)**-0.5 with n_i(t) = sum_{j<=t} gamma_i^(t-j), the decayed
count (t itself when gamma_i = 1).

The decoder's attention (self and cross) is always MemSizer's. The encoder's self-attention is a
setting, as in the official code: "memsizer" (its `--use-memsizer` mode) or "softmax" (its
translation recipe, `--decoder-use-memsizer`), where relative positions (ALiBi, RoPE) can act on
the encoder's query-key scores. What ships: the softmax encoder with ALiBi, which extrapolated best
at the same speed and size (benchmarks/REPORT.md, section 2); the setting's default stays MemSizer
attention everywhere, whose encoder cannot take relative positions.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.backend import ROLES, AttentionState, Backend, carried
from models.performer import CAUSAL_GATES, decay_rates
from models.transformer import SoftmaxAttention

# The official implementation initialises projections with gain init_scale**-0.5, init_scale = 8.
INIT_GAIN = 8 ** -0.5
ENCODERS = ("memsizer", "softmax")


@dataclass(frozen=True)
class MemSizerSettings:
    """Memory slots: k for non-causal modules (encoder, cross), causal_k for decoder self-attention;
    encoder: the encoder's self-attention, "memsizer" or "softmax"; causal_gate: "none" or "decay",
    the decoder self-attention's per-slot decay gate (see the module docstring)."""

    k: int = 32
    causal_k: int = 4
    encoder: str = "memsizer"
    causal_gate: str = "none"

    def __post_init__(self):
        if self.k < 1 or self.causal_k < 1:
            raise ValueError(f"memory slots must be positive, got k={self.k}, causal_k={self.causal_k}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.causal_gate not in CAUSAL_GATES:
            raise ValueError(f"causal_gate must be one of {', '.join(CAUSAL_GATES)}, got {self.causal_gate!r}")


@dataclass
class RunningSum(AttentionState):
    """Causal self-attention state: the unscaled sum of k_j^T v_j (B, k, d), decayed slot by slot
    under the gate, and the step count."""

    total: torch.Tensor | None = None
    count: int = 0


@dataclass
class SourceMemory(AttentionState):
    """Cross-attention state: the encoder output's memory S (B, k, d), computed once per question."""

    memory: torch.Tensor | None = None


class MemSizerAttention(nn.Module):
    """Key-value memory attention; `role` is "encoder", "causal" or "cross"."""

    def __init__(self, config, role: str):
        super().__init__()
        assert role in ROLES, f"unknown attention role {role!r}"
        self.role = role
        self.n_heads = config.n_heads
        settings = config.settings
        self.k = settings.causal_k if role == "causal" else settings.k
        d = config.d_model
        self.q_proj = nn.Linear(d, self.n_heads * self.k)  # Phi: memory keys for every head
        self.k_proj = nn.Linear(d, self.k)  # W_l
        self.v_proj = nn.Linear(d, d)  # W_r
        self.k_norm = nn.LayerNorm(self.k)
        self.v_norm = nn.LayerNorm(d)
        self.attn_dropout = nn.Dropout(config.dropout)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=INIT_GAIN)
            nn.init.zeros_(proj.bias)
        # the gate's per-slot decays: a constant of the slot count, so not stored in checkpoints
        self.register_buffer("decay", decay_rates(self.k).float()
                             if role == "causal" and settings.causal_gate == "decay" else None, persistent=False)

    def new_state(self) -> AttentionState:
        return RunningSum() if self.role == "causal" else SourceMemory()

    def read_weights(self, y: torch.Tensor) -> torch.Tensor:
        """Slot weights a_t = mean over heads of softmax_k(Phi y_t): (B, T, d) -> (B, T, k)."""
        B, T, _ = y.shape
        a = F.softmax(self.q_proj(y).view(B, T, self.n_heads, self.k), dim=-1)  # (B, T, H, k)
        return self.attn_dropout(a).mean(dim=2)

    def keys_values(self, x: torch.Tensor):
        """LN(W_l x): (B, T, k) and LN(W_r x): (B, T, d)."""
        return self.k_norm(self.k_proj(x)), self.v_norm(self.v_proj(x))

    def source_memory(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """S = n**-0.5 * sum over non-padding j of k_j^T v_j: (B, k, d)."""
        keys, values = self.keys_values(x)
        keys = keys.masked_fill(pad[:, :, None], 0.0)
        n = (~pad).sum(dim=1).clamp(min=1).to(keys.dtype)  # (B,)
        return keys.transpose(1, 2) @ values * n.rsqrt()[:, None, None]

    def forward(self, x, context=None, context_pad=None, state: AttentionState | None = None):
        """Read from the memory for every position of x (B, T, d); `state` keeps decoding state."""
        a = self.read_weights(x)  # (B, T, k)
        if self.role == "encoder":
            return a @ self.source_memory(x, context_pad)
        if self.role == "cross":
            if state is not None and state.memory is not None:
                return a @ state.memory
            memory = self.source_memory(context, context_pad)
            if state is not None:
                state.memory = memory
            return a @ memory
        keys, values = self.keys_values(x)  # (B, T, k), (B, T, d)
        T = x.shape[1]
        if self.decay is not None:
            return self._gated(a, keys, values, state)
        if state is None:
            # all prefixes in parallel: out_t = t**-0.5 * sum_{j<=t} (a_t . k_j) v_j
            scores = (a @ keys.transpose(1, 2)).tril()  # (B, T, T)
            t = torch.arange(1, T + 1, device=x.device, dtype=a.dtype)
            return (scores @ values) * t.rsqrt()[None, :, None]
        # recurrent form: the unscaled running sum and the step count are the whole state, kept in
        # float32 under autocast (SLiM rebuilds a slice's start state by subtracting its terms)
        with torch.autocast(x.device.type, enabled=False):
            sums = torch.cumsum(self._terms(keys, values), dim=1)  # (B, T, k, d)
            if state.total is not None:
                sums = sums + state.total[:, None]
            count = state.count
            state.total, state.count = sums[:, -1], count + T
            t = torch.arange(count + 1, count + T + 1, device=x.device, dtype=sums.dtype)
            return torch.einsum("btk,btkd->btd", carried(a), sums) * t.rsqrt()[None, :, None]

    def _gated(self, a, keys, values, state: RunningSum | None):
        """The decay-gated causal form, from the state's sum and count (or from nothing):
        out_t = sum_i a_t[i] n_i(t)**-0.5 (gamma_i^(t-c) S_c[i] + sum_{c<j<=t} gamma_i^(t-j) k_j[i] v_j).
        The masked quadratic form, O(k T^2) per call: this task's targets are a few positions."""
        T = keys.shape[1]
        count = state.count if state is not None else 0
        with torch.autocast(keys.device.type, enabled=False) if state is not None else nullcontext():
            if state is not None:  # a carried state stays float32 (as the ungated sum does)
                a, keys, values = carried(a), carried(keys), carried(values)
            log_gamma = torch.log(self.decay.to(keys.dtype))[:, None]  # (k, 1)
            s = torch.arange(T, device=keys.device, dtype=keys.dtype)
            distance = s[:, None] - s[None, :]  # (T, T): t - j
            decay = torch.exp(log_gamma[:, :, None] * distance.clamp(min=0)) * (distance >= 0)  # (k, T, T)
            # n_i(t) = (1 - gamma_i^t) / (1 - gamma_i) at absolute position t = count + s + 1
            decayed_count = torch.expm1(log_gamma * (count + s + 1)) / torch.expm1(log_gamma)  # (k, T)
            read = a * decayed_count.T.rsqrt()  # (B, T, k)
            out = torch.einsum("bti,itj,bji->btj", read, decay, keys) @ values
            if state is not None:  # the sum at the last position, (B, k, d), carried to the next call
                total = torch.einsum("ij,bji,bjd->bid", decay[:, -1], keys, values)
                if state.total is not None:
                    from_start = torch.exp(log_gamma * (s + 1)).T  # (T, k): gamma_i^(t-c)
                    out = out + torch.einsum("bti,bid->btd", read * from_start, state.total)
                    total = total + torch.exp(log_gamma * T)[None] * state.total
                state.total, state.count = total, count + T
            return out

    @staticmethod
    def _terms(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Each position's addition to the running sum, k_t^T v_t at least in float32: (B, T, k, d)."""
        return carried(keys)[:, :, :, None] * carried(values)[:, :, None, :]

    @torch.no_grad()
    def rewind(self, x: torch.Tensor, after: RunningSum) -> RunningSum:
        """The causal state before the positions x (B, T, d) from the state after them (SLiM,
        models/slim.py): the running sum less the positions' own terms, the count less T."""
        assert self.role == "causal", "only causal attention carries a state along the target"
        if self.decay is not None:  # rewinding would divide by gamma^T; check_slim refuses it first
            raise ValueError("the decay gate's state is not a plain sum: SLiM cannot rewind it")
        keys, values = self.keys_values(x)  # as the forward pass computed them (under its autocast)
        with torch.autocast(x.device.type, enabled=False):
            return RunningSum(total=after.total - self._terms(keys, values).sum(dim=1), count=after.count - x.shape[1])


def configuration(config) -> str:
    encoder = ("softmax attention (the official translation recipe's encoder"
               + (f"; {config.relative_positions} positions are ours, the recipe's are sinusoids)"
                  if config.relative_positions != "none" else ")") if config.settings.encoder == "softmax"
               else "MemSizer attention (the official --use-memsizer mode)")
    gate = (" Decoder self-attention gated by per-slot decays (ours: the recurrent form of ALiBi)."
            if config.settings.causal_gate == "decay" else "")
    return (f"MemSizer attention in the decoder ({config.settings.causal_k} slots causal, {config.settings.k} "
            f"cross); encoder: {encoder}.{gate}")


def attention(config, role: str) -> nn.Module:
    """MemSizer attention, except softmax attention in the encoder when the settings ask for it."""
    if role == "encoder" and config.settings.encoder == "softmax":
        return SoftmaxAttention(config, role)
    return MemSizerAttention(config, role)


BACKEND = Backend(
    name="memsizer",
    display_name="MemSizer",
    paper="Zhang & Cai, EMNLP 2022, \"Linearizing Transformers with Key-Value Memory\" (arXiv 2203.12644)",
    summary="Key-value memory attention: k learned memory slots instead of attending over every position; "
            "decoding keeps a fixed-size state.",
    attention=attention,
    settings=MemSizerSettings,
    relative_roles=lambda settings, mode: ("encoder",) if settings.encoder == "softmax" else (),
    configuration=configuration,
)
