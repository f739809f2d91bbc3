"""MemoryFormer (Ding et al., NeurIPS 2024, "MemoryFormer: Minimize Transformer Computation by
Removing Fully-Connected Layers"): hash-table memory layers in place of fully-connected layers.

Memory layer, x in R^d -> R^h: split x into K = d / tau chunks z_k of tau values. The signs of
z_k give an integer code c_k in [0, 2^tau), which picks row c_k of the chunk's own table
T_k (2^tau rows of size h). The output is sum_k w(z_k) * T_k[c_k] + b. The weight w is a
differentiable function of the chunk, so gradients reach x through it (the codes themselves
are piecewise constant):

- "paper": the probability of the selected code under a softmax over all 2^tau sign codes,
  w = exp(<sign z, z>) / sum_{s in {-1,1}^tau} exp(<s, z>) = prod_i sigmoid(2 |z_i|).
- "official" (C0-Design/MemoryFormer, compute_code_score): that probability scaled by the chunk's
  L1 norm, w = |z|_1 * prod_i sigmoid(2 |z_i|).

Q, K and V come from three memory layers that share one hash of their input (codes and weights
computed once); softmax attention itself stays, and the attention output projection goes. The
feed-forward is the paper's Memory Block: memory layer, LayerNorm, memory layer, no activation.
With e "expanding bits" (the paper's Table 5; `extra_bit=2` in the official model) the first
layer widens d to K * (tau + e) outputs, which the second hashes in K chunks of tau + e bits into
tables 2^e times taller; e = 0 maps d -> d -> d at the same tau. What ships: e = 0 (measured no
worse than the official e = 2 on this task, at two thirds of the size).
Lookups are one `F.embedding_bag` over all chunks (a gather and a weighted sum in one kernel).
Decoding keeps the Transformer's key/value cache: only the projections change.
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.backend import SELF_ROLES, Backend
from models.transformer import SoftmaxAttention

WEIGHTINGS = ("paper", "official")


@dataclass(frozen=True)
class MemoryFormerSettings:
    """tau: bits per hash code (each chunk of tau values picks one of 2^tau table rows).
    weighting: how a selected row is weighted, "paper" or "official" (see the module docstring).
    extra_bits: the Memory Block's expanding bits e (its second layer hashes tau + e bits)."""

    tau: int = 4
    weighting: str = "paper"
    # the official model's extra_bit is 2; here 2 bits bought no accuracy and made the Memory Block
    # 2.74x as large (the whole proxy model 1.5x; benchmarks/REPORT.md, section 2), so new models default to none
    extra_bits: int = 0

    # checkpoints stored before the Memory Block could expand had none
    STORED_DEFAULTS: ClassVar[dict] = {"extra_bits": 0}

    def __post_init__(self):
        if not 1 <= self.tau <= 12:
            raise ValueError(f"tau must be between 1 and 12 (a table has 2^tau rows), got {self.tau}")
        if not 0 <= self.extra_bits <= 12 - self.tau:
            raise ValueError(f"extra_bits must be between 0 and {12 - self.tau} (tau + extra_bits <= 12), "
                             f"got {self.extra_bits}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")


@dataclass
class HashedInput:
    """One hash of an input: flat table-row indices (N, K) and their weights (N, K)."""

    rows: torch.Tensor
    weights: torch.Tensor
    shape: tuple  # the input's leading dimensions, restored on output


def code_powers(tau: int, device=None) -> torch.Tensor:
    """(tau,) float32 powers of two, most significant first: a chunk's sign bits times these sum to its code."""
    return 2.0 ** torch.arange(tau - 1, -1, -1, device=device, dtype=torch.float32)


def chunk_offsets(chunks: int, tau: int, device=None) -> torch.Tensor:
    """(chunks,) first row of each chunk's table in the stacked tables: chunk k starts at k * 2^tau."""
    return torch.arange(chunks, device=device) * (2 ** tau)


def chunk_codes(z: torch.Tensor, powers: torch.Tensor | None = None) -> torch.Tensor:
    """(..., K, tau) chunks -> (..., K) integer codes: bit i (most significant first) is z_i >= 0.
    One matrix product of the 0/1 bits with the powers of two, in float32, where sums below 2^24
    are exact (tau <= 12 gives < 2^12); never under autocast, whose bfloat16 is exact only to 2^8."""
    powers = code_powers(z.shape[-1], z.device) if powers is None else powers
    bits = (z >= 0).to(powers.dtype)
    autocasting = torch.is_autocast_enabled(z.device.type)
    with torch.autocast(z.device.type, enabled=False) if autocasting else nullcontext():
        return (bits @ powers).long()


def code_weights(z: torch.Tensor, weighting: str) -> torch.Tensor:
    """(..., K, tau) chunks -> (..., K) weights of their selected codes (see the module docstring).
    Each factor sigmoid(2 |z_i|) lies in [0.5, 1], so the product is at least 2^-tau: it cannot
    underflow, and the direct product takes ~40% of the time of a sum of log-sigmoids."""
    magnitude = z.abs()
    probability = torch.sigmoid(2 * magnitude).prod(-1)
    return probability if weighting == "paper" else magnitude.sum(-1) * probability


def hash_input(x: torch.Tensor, tau: int, weighting: str, powers: torch.Tensor | None = None,
               offsets: torch.Tensor | None = None) -> HashedInput:
    """Hash x (..., d) into K = d / tau chunks: each chunk's row index in the stacked tables.
    powers (code_powers) and offsets (chunk_offsets) may come precomputed."""
    *lead, d = x.shape
    chunks = d // tau
    z = x.reshape(-1, chunks, tau)
    offsets = chunk_offsets(chunks, tau, x.device) if offsets is None else offsets
    return HashedInput(chunk_codes(z, powers) + offsets, code_weights(z, weighting), tuple(lead))


class MemoryLayer(nn.Module):
    """x (..., d_in) -> (..., d_out) by weighted table lookups; replaces nn.Linear(d_in, d_out)."""

    def __init__(self, d_in: int, d_out: int, tau: int, weighting: str):
        super().__init__()
        if d_in % tau:
            raise ValueError(f"the input width {d_in} must be a multiple of tau={tau}")
        self.d_in, self.d_out, self.tau, self.weighting = d_in, d_out, tau, weighting
        self.chunks = d_in // tau
        # K tables of 2^tau rows, stacked; std K^-1/2 gives outputs of about unit scale when the
        # weights are ~1 (their sum over K chunks is a sum of K independent rows)
        self.tables = nn.Parameter(torch.randn(self.chunks * 2 ** tau, d_out) * self.chunks ** -0.5)
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.recorded_codes = None  # a list while bucket_entropy() records this layer's codes
        # constants of every hash, made once rather than per call (a decoding step hashes ~12 times)
        self.register_buffer("code_powers", code_powers(tau), persistent=False)
        self.register_buffer("row_offsets", chunk_offsets(self.chunks, tau), persistent=False)

    def hash(self, x: torch.Tensor) -> HashedInput:
        hashed = hash_input(x, self.tau, self.weighting, self.code_powers, self.row_offsets)
        if self.recorded_codes is not None:
            self.recorded_codes.append(hashed.rows.reshape(-1, self.chunks) % 2 ** self.tau)
        return hashed

    def lookup(self, hashed: HashedInput) -> torch.Tensor:
        """The layer's output for an input already hashed (shared by Q, K and V)."""
        out = F.embedding_bag(hashed.rows, self.tables, per_sample_weights=hashed.weights.to(self.tables.dtype),
                              mode="sum")
        return (out + self.bias).reshape(*hashed.shape, self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lookup(self.hash(x))

    def extra_repr(self) -> str:
        return f"{self.d_in} -> {self.d_out}, tau={self.tau}, tables={self.chunks}x{2 ** self.tau}, {self.weighting}"


def settings_of(config) -> MemoryFormerSettings:
    return config.settings


class MemoryAttention(SoftmaxAttention):
    """Softmax attention whose Q, K and V come from memory layers sharing one hash of their
    input, with no output projection (the heads' outputs are concatenated)."""

    def build_projections(self, config) -> None:
        s, d = settings_of(config), config.d_model
        self.q_memory = MemoryLayer(d, d, s.tau, s.weighting)
        self.k_memory = MemoryLayer(d, d, s.tau, s.weighting)
        self.v_memory = MemoryLayer(d, d, s.tau, s.weighting)

    def project_self(self, x):
        hashed = self.q_memory.hash(x)  # every memory layer here hashes the same way: once for all three
        return self.q_memory.lookup(hashed), self.k_memory.lookup(hashed), self.v_memory.lookup(hashed)

    def project_query(self, x):
        return self.q_memory(x)

    def project_key_value(self, context):
        hashed = self.k_memory.hash(context)
        return self.k_memory.lookup(hashed), self.v_memory.lookup(hashed)

    def project_output(self, out):
        return out


class MemoryBlock(nn.Module):
    """The paper's feed-forward: memory layer, LayerNorm, memory layer; no activation (the
    hashing is the nonlinearity). d -> K * (tau + e) -> d, K = d / tau chunks in both layers."""

    def __init__(self, config):
        super().__init__()
        s, d = settings_of(config), config.d_model
        if d % s.tau:
            raise ValueError(f"d_model {d} must be a multiple of tau={s.tau}")
        wide_bits = s.tau + s.extra_bits
        width = d // s.tau * wide_bits
        self.first = MemoryLayer(d, width, s.tau, s.weighting)
        self.norm = nn.LayerNorm(width)
        self.second = MemoryLayer(width, d, wide_bits, s.weighting)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.second(self.dropout(self.norm(self.first(x))))


def configuration(config) -> str:
    s = config.settings
    return (f"Memory Block with {s.extra_bits} expanding bits (the official code: 2), tau {s.tau}, "
            f"{s.weighting} row weights, d_model {config.d_model}.")


BACKEND = Backend(
    name="memoryformer",
    display_name="MemoryFormer",
    paper="Ding et al., NeurIPS 2024, \"MemoryFormer: Minimize Transformer Computation by Removing "
          "Fully-Connected Layers\"",
    summary="Hash-table memory layers in place of the Q/K/V projections and the feed-forward; no attention "
            "output projection; softmax attention and its growing key/value cache stay.",
    attention=MemoryAttention,
    settings=MemoryFormerSettings,
    feed_forward=MemoryBlock,
    decode_state_grows=True,
    differentiable=False,  # sign hashes: piecewise constant, so gradients miss its changes
    relative_roles=lambda settings, mode: SELF_ROLES,  # its softmax attention is the Transformer's
    configuration=configuration,
)


@torch.no_grad()
def bucket_entropy(model: nn.Module, src: torch.Tensor, tgt_in: torch.Tensor) -> dict[str, float]:
    """Mean entropy in bits (0 .. tau) of table-row usage per memory layer over one teacher-forced
    pass: how evenly the hash spreads inputs over each chunk's 2^tau rows. Low values mean most
    rows never train."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MemoryLayer)}
    for layer in layers.values():
        layer.recorded_codes = []
    try:
        model(src, tgt_in)
        entropies = {}
        for name, layer in layers.items():
            if not layer.recorded_codes:  # a layer this pass never reached
                continue
            codes = torch.cat(layer.recorded_codes).cpu()  # (N, K) codes in [0, 2^tau)
            counts = torch.zeros(layer.chunks, 2 ** layer.tau)
            counts.scatter_add_(1, codes.T.contiguous(), torch.ones(codes.shape[1], codes.shape[0]))
            p = counts / counts.sum(1, keepdim=True)
            entropies[name] = float(-(p * p.clamp_min(1e-12).log2()).sum(1).mean())
        return entropies
    finally:
        for layer in layers.values():
            layer.recorded_codes = None
