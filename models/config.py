"""The one configuration dataclass that drives every backend (paper config by default).

`backend` names a registered backend; `settings` is that backend's own settings dataclass
(e.g. MemSizer's memory slots), so backend-specific fields live with their backend.
"""
import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from models import registry

POSITION_MODES = ("end", "start")
# "abacus" (McLeish et al., 2024, "Transformers Can Do Arithmetic with the Right Embeddings"):
# every digit also gets a learned embedding of its significance within its number (units 1,
# tens 2, ...), so a digit's place no longer depends on where the number sits in the question.
# "abacus-sinusoid": the same index through a learned projection of a fixed sinusoid table, so
# places longer than any trained number still get embeddings that continue the trained ones
DIGIT_POSITION_MODES = ("none", "abacus", "abacus-sinusoid")
# "rope" (Su et al., 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding"): self-
# attention queries and keys are rotated by their positions, so scores depend only on the offset
# between two tokens; no absolute sinusoid is added. Backends whose attention has query-key
# scores apply it; the Performer's encoder rotates its kernel features instead (RoFormer, section
# 3.4.3); see Backend.relative_roles.
# "alibi" (Press et al., 2022, "Train Short, Test Long: Attention with Linear Biases Enables Input
# Length Extrapolation"): no position embedding; every self-attention score is lowered by a fixed
# per-head slope times the distance between query and key. Same backends as rope
RELATIVE_POSITION_MODES = ("none", "rope", "alibi")
# What a stored config that lacks a field meant: the behaviour before the field existed (configs
# written before abacus positions were had none), not today's default
LEGACY_DEFAULTS = {"digit_positions": "none", "relative_positions": "none"}


@dataclass
class ModelConfig:
    """Architecture of a character-level encoder-decoder; `backend` selects the plug-in."""

    backend: str  # a registered backend's name
    vocab_size: int = 98
    d_model: int = 512
    d_ff: int = 2048
    n_heads: int = 8
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    # 0: the training stream is generated afresh and never repeats, so there is nothing to
    # overfit, and dropout's noise only delayed exact answers (benchmarks/studies/README.md, time to accuracy)
    dropout: float = 0.0
    # Where source positions are counted from: "end" makes the final '?' position 0, so the
    # digit asked for sits at a fixed offset for a given place name; "start" keeps the place
    # name's position from moving with the number's length. With abacus digit positions (each
    # digit embeds its place in its number) "start" + "abacus" taught every place of the training
    # distribution in the fewest steps (benchmarks/studies/README.md, accuracy levers)
    source_positions: str = "start"
    digit_positions: str = "abacus"
    # Training only: each question's digit places are shifted by a random offset in
    # [0, digit_offset_max] (McLeish et al., 2024, who shift by up to 100 for 100-digit operands),
    # so the place rows of digits longer than any trained number are trained too, and the model
    # must read a digit's place relative to its number's units digit. Inference uses offset 0.
    digit_offset_max: int = 0
    relative_positions: str = "none"
    max_source_len: int = 160
    max_target_len: int = 32
    # the backend's settings dataclass; a dict of its fields, or None for its defaults
    settings: Any = None

    def __post_init__(self):
        spec = registry.get(self.backend)
        if self.settings is None:
            self.settings = spec.settings()
        elif isinstance(self.settings, dict):
            known = {f.name for f in fields(spec.settings)}
            if set(self.settings) - known:
                raise ValueError(f"unknown {self.backend} settings {sorted(set(self.settings) - known)}; "
                                 f"it has {sorted(known) or 'none'}")
            self.settings = spec.settings(**self.settings)
        elif not isinstance(self.settings, spec.settings):
            raise ValueError(f"settings must be a {spec.settings.__name__} for backend {self.backend!r}")
        if self.source_positions not in POSITION_MODES:
            raise ValueError(f"source_positions must be one of {POSITION_MODES}, got {self.source_positions!r}")
        if self.digit_positions not in DIGIT_POSITION_MODES:
            raise ValueError(f"digit_positions must be one of {DIGIT_POSITION_MODES}, got {self.digit_positions!r}")
        if self.digit_offset_max < 0 or (self.digit_offset_max and self.digit_positions == "none"):
            raise ValueError(f"digit_offset_max must be >= 0, and 0 without digit positions; got "
                             f"{self.digit_offset_max} with digit_positions {self.digit_positions!r}")
        if self.relative_positions not in RELATIVE_POSITION_MODES:
            raise ValueError(f"relative_positions must be one of {RELATIVE_POSITION_MODES}, "
                             f"got {self.relative_positions!r}")
        if self.relative_positions != "none" and not spec.relative_roles(self.settings, self.relative_positions):
            raise ValueError(f"{self.backend} attention takes no {self.relative_positions!r} relative positions in these "
                             f"settings: they act on query-key scores (rope also on the Performer's encoder features)")
        if self.relative_positions != "none" and self.source_positions != "start":
            raise ValueError(f"{self.relative_positions} counts positions from the question's start: use "
                             f"source_positions 'start'")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    def relative_in(self, role: str) -> bool:
        """Whether relative positions act in this self-attention role (else absolute positions are added)."""
        return self.relative_positions != "none" and role in self.spec.relative_roles(self.settings,
                                                                                        self.relative_positions)

    @property
    def spec(self):
        """The registered description of this config's backend."""
        return registry.get(self.backend)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """A stored config; fields it lacks mean what they meant before they existed."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        data = {**LEGACY_DEFAULTS, **data}
        if isinstance(data.get("settings"), dict):  # likewise for the backend's own settings
            settings_type = registry.get(data["backend"]).settings
            retired = getattr(settings_type, "RETIRED", ())
            data["settings"] = {**getattr(settings_type, "STORED_DEFAULTS", {}),
                                **{k: v for k, v in data["settings"].items() if k not in retired}}
        return cls(**data)
