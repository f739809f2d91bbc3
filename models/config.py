"""The one configuration dataclass that drives both backends (paper config by default)."""
from dataclasses import asdict, dataclass, fields

ATTENTIONS = ("transformer", "memsizer")
POSITION_MODES = ("end", "start")


@dataclass
class ModelConfig:
    """Architecture of a character-level encoder-decoder; `attention` selects the backend."""

    attention: str = "transformer"
    vocab_size: int = 98
    d_model: int = 512
    d_ff: int = 2048
    n_heads: int = 8
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    # 0: the training stream is generated afresh and never repeats, so there is nothing to
    # overfit, and dropout's noise only delayed exact answers (benchmarks/ANALYSIS.md, "Dropout")
    dropout: float = 0.0
    # Where source positions are counted from: "end" makes the final '?' position 0, so the
    # digit asked for sits at a fixed offset for a given place name.
    source_positions: str = "end"
    max_source_len: int = 160
    max_target_len: int = 32
    # MemSizer memory slots (Zhang & Cai 2022): non-causal modules and causal self-attention.
    memsizer_k: int = 32
    memsizer_causal_k: int = 4

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTIONS)}")
        if self.source_positions not in POSITION_MODES:
            raise ValueError(f"source_positions must be one of {POSITION_MODES}, got {self.source_positions!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**data)
