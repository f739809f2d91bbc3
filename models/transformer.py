"""Standard multi-head scaled dot-product attention (Vaswani et al., 2017, "Attention Is All You Need").

One module serves three roles in the encoder-decoder: non-causal self-attention
("encoder"), causal decoder self-attention ("causal") and decoder cross-attention
("cross"). Incremental decoding keeps a per-layer key/value cache that grows by one
position per generated token.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig


class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention with Q/K/V/output projections."""

    def __init__(self, config: ModelConfig, role: str):
        super().__init__()
        assert role in ("encoder", "causal", "cross"), f"unknown attention role {role!r}"
        self.role = role
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        d = config.d_model
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        return x.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, dh)

    def forward(self, x, context=None, context_pad=None, cache=None):
        """Attend from x (B, T, d); `cache` (a dict) holds keys/values across decoding steps."""
        B, T, d = x.shape
        q = self._split_heads(self.q_proj(x))
        if self.role == "cross":
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = self._split_heads(self.k_proj(context)), self._split_heads(self.v_proj(context))
                if cache is not None:
                    cache["k"], cache["v"] = k, v
            mask = ~context_pad[:, None, None, :]  # (B, 1, 1, S): True where a key may be attended
        elif self.role == "encoder":
            k, v = self._split_heads(self.k_proj(x)), self._split_heads(self.v_proj(x))
            mask = ~context_pad[:, None, None, :]
        else:
            k, v = self._split_heads(self.k_proj(x)), self._split_heads(self.v_proj(x))
            past = 0
            if cache is not None:
                if "k" in cache:
                    past = cache["k"].shape[2]
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            # query i sits at absolute position past + i and sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, T, dh)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, d))
