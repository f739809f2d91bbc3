"""Shared fixtures: a tokenizer and tiny float32 configs of both backends."""
import pytest
import torch

from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.tokenizer import Tokenizer

BACKENDS = ("transformer", "memsizer")


@pytest.fixture
def tokenizer():
    return Tokenizer()


def tiny_config(attention: str, **overrides) -> ModelConfig:
    settings = dict(attention=attention, d_model=32, d_ff=64, n_heads=4, n_encoder_layers=2,
                    n_decoder_layers=2, dropout=0.0, memsizer_k=8, memsizer_causal_k=4)
    settings.update(overrides)
    return ModelConfig(**settings)


def tiny_model(attention: str, seed: int = 0, **overrides) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(tiny_config(attention, **overrides)).eval()
    # random init leaves MemSizer's LayerNorms and biases at identity/zero; perturb everything so
    # the equivalence tests exercise every parameter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
