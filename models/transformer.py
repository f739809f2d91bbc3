"""Standard multi-head scaled dot-product attention (Vaswani et al., 2017, "Attention Is All You Need").

One module serves three roles in the encoder-decoder: non-causal self-attention
("encoder"), causal decoder self-attention ("causal") and decoder cross-attention
("cross"). Incremental decoding keeps a per-layer key/value cache that grows by one
position per generated token.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.backend import ROLES, SELF_ROLES, AttentionState, Backend


@dataclass
class KVCache(AttentionState):
    """Keys and values (B, H, T, dh) seen so far; T grows by one per decoded token."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, keys, values):
        """Add this step's keys/values and return the whole cache's."""
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values


def rotate(x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Rotary positions (Su et al., 2021, RoFormer): each pair of channels (i, i + dh/2) of the
    token at position start + t turned by angle (start + t) * 10000^(-2i/dh), so the dot product
    of a rotated query and key depends only on their offset. x is (B, H, T, dh)."""
    half = x.shape[-1] // 2
    freq = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angle = torch.arange(start, start + x.shape[2], device=x.device, dtype=torch.float32)[:, None] * freq
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention with Q/K/V/output projections.

    The projections are hooks (`project_self`, `project_query`, `project_key_value`,
    `project_output`) so a backend that changes only how Q, K and V are made (MemoryFormer's
    hash tables) keeps this module's masking, caching and attention."""

    def __init__(self, config, role: str):
        super().__init__()
        assert role in ROLES, f"unknown attention role {role!r}"
        self.role = role
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        # cross-attention relates a target and a source position, which share no axis: no relative positions
        relative = config.relative_positions if role != "cross" else "none"
        self.rotary = relative == "rope"
        if relative == "alibi":  # the paper's slopes 2^(-8h/H), h = 1..H: one distance scale per head
            slopes = 2.0 ** (-8.0 * torch.arange(1, config.n_heads + 1) / config.n_heads)
            self.register_buffer("alibi_slopes", slopes[:, None, None], persistent=False)  # (H, 1, 1)
        else:
            self.alibi_slopes = None
        self.build_projections(config)

    def build_projections(self, config) -> None:
        d = config.d_model
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def project_self(self, x):
        """(q, k, v), each (B, T, d), for self-attention over x."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def project_query(self, x):
        return self.q_proj(x)

    def project_key_value(self, context):
        return self.k_proj(context), self.v_proj(context)

    def project_output(self, out):
        return self.out_proj(out)

    def new_state(self) -> KVCache:
        return KVCache()

    def _alibi(self, allowed: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """A float attention mask: -slope * distance where `allowed`, -inf elsewhere; (.., H, T, S)."""
        bias = -self.alibi_slopes.to(torch.float32) * distance.to(torch.float32)  # (H, T, S)
        return bias.masked_fill(~allowed, float("-inf"))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        return x.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, dh)

    def forward(self, x, context=None, context_pad=None, state: KVCache | None = None):
        """Attend from x (B, T, d); `state` holds keys/values across decoding steps."""
        B, T, d = x.shape
        if self.role == "cross":
            q = self._split_heads(self.project_query(x))
            if state is not None and state.keys is not None:  # the encoder's keys/values, once per question
                k, v = state.keys, state.values
            else:
                k, v = map(self._split_heads, self.project_key_value(context))
                if state is not None:
                    state.append(k, v)
            mask = ~context_pad[:, None, None, :]  # (B, 1, 1, S): True where a key may be attended
        elif self.role == "encoder":
            q, k, v = map(self._split_heads, self.project_self(x))
            if self.rotary:  # source positions from the start: padding sits after every real token
                q, k = rotate(q), rotate(k)
            mask = ~context_pad[:, None, None, :]
            if self.alibi_slopes is not None:  # both directions, by distance
                index = torch.arange(T, device=x.device)
                mask = self._alibi(mask, (index[:, None] - index[None, :]).abs())
        else:
            q, k, v = map(self._split_heads, self.project_self(x))
            past = 0 if state is None else state.length
            if self.rotary:  # rotated once at their own positions; the cache keeps rotated keys
                q, k = rotate(q, past), rotate(k, past)
            if state is not None:
                k, v = state.append(k, v)
            # query i sits at absolute position past + i and sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            if self.alibi_slopes is not None:  # keys behind the query, by distance (ahead: masked)
                query, key = torch.arange(past, past + T, device=x.device), torch.arange(past + T, device=x.device)
                mask = self._alibi(mask, (query[:, None] - key[None, :]).clamp(min=0))
        if mask.is_floating_point():  # alibi's biases, in the queries' precision
            mask = mask.to(q.dtype)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, T, dh)
        return self.project_output(out.transpose(1, 2).reshape(B, T, d))


BACKEND = Backend(
    name="transformer",
    display_name="Transformer",
    paper="Vaswani et al., NeurIPS 2017, \"Attention Is All You Need\"",
    summary="Multi-head softmax attention; decoding keeps a key/value cache that grows with every token.",
    attention=SoftmaxAttention,
    decode_state_grows=True,
    relative_roles=lambda settings, mode: SELF_ROLES,
    runs_on_ctranslate2=True,
)
