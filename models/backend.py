"""The plug-in boundary: what a backend module exports and what its decoding state looks like.

A backend is one module under `models/` exporting one `Backend` description, the plug-in
contract: its name (the only spelling, used by the config, CLIs, API, checkpoint directory and
UI), how to show and cite it, its own settings dataclass, factories for what it replaces in the
shared stack (the attention in each role and, optionally, the feed-forward), and what it can do
(a fixed-size decoding state, query-key scores for relative positions, running on CTranslate2),
as data: the contract imports no engine.
The stack in `seq2seq.py` asks the description, never the name. How a shipped checkpoint was
trained is the checkpoint's own provenance, not part of the description.
"""
import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


ROLES = ("encoder", "causal", "cross")  # encoder self-attention, decoder self-attention, cross-attention
SELF_ROLES = ("encoder", "causal")  # the roles relative positions can apply to


class AttentionState:
    """What one attention module keeps between decoding steps (a KV cache, a running sum...).

    Subclasses are dataclasses of tensors (and counters); `nbytes` counts the tensors, so the
    decode-memory tests and benchmarks measure every backend the same way."""

    def nbytes(self) -> int:
        tensors = (getattr(self, f.name) for f in dataclasses.fields(self))
        return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def carried(t: torch.Tensor) -> torch.Tensor:
    """A tensor as a carried decoding state holds it: float32, or wider if it already is. Under
    bfloat16 autocast a state that SLiM rewinds by subtraction (models/slim.py) would lose its prefix."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@dataclass(frozen=True)
class NoSettings:
    """A backend with nothing of its own to set."""


@dataclass(frozen=True)
class Backend:
    """One backend's description; `models.registry` holds one per backend module."""

    name: str  # lower-case identifier, e.g. "memsizer"
    display_name: str  # how the page and plots label it, e.g. "MemSizer"
    paper: str  # the reference it implements
    summary: str  # one sentence for the page: what it changes in the shared encoder-decoder
    # attention(config, role) -> module with forward(x, context=None, context_pad=None, state=None)
    # and new_state() -> AttentionState
    attention: Callable[..., nn.Module]
    settings: type = NoSettings  # a frozen dataclass; its fields become `--<name>-<field>` CLI flags
    feed_forward: Callable[..., nn.Module] | None = None  # None: the shared ReLU feed-forward
    # True when the decoder self-attention state grows with every decoded token (a KV cache);
    # False promises a fixed-size state, which tests/models/test_models.py holds every such backend to
    decode_state_grows: bool = False
    # False for a backend whose checkpoint does not ship: the service does not wait for it
    shipped: bool = True
    # configuration(config) -> one sentence for the page: how a checkpoint's settings build this backend,
    # and where they differ from its authors' defaults
    configuration: Callable[[object], str] = lambda config: ""
    # whether the output's gradients see the inputs, so gradient attributions (Integrated Gradients)
    # can explain it; False where piecewise-constant layers (hashing) hide its changes from them
    differentiable: bool = True
    # whether CTranslate2's Transformer spec expresses its layers exactly, so the engine can serve it
    # (models/runtimes adds its runtimes); every backend runs on torch
    runs_on_ctranslate2: bool = False
    # relative_roles(settings, mode) -> the self-attention roles ("encoder", "causal") where relative
    # positions of that mode (config.relative_positions: "rope" rotates queries and keys, "alibi"
    # biases the scores) act: roles with query-key scores take both; the Performer's kernel features
    # take rope in the form that factorises; MemSizer's memory slots take neither. A role outside
    # keeps absolute positions
    relative_roles: Callable[[object, str], tuple[str, ...]] = lambda settings, mode: ()
