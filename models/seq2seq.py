"""Pre-LayerNorm character-level encoder-decoder shared by every backend.

What a backend replaces (the attention in each role, optionally the feed-forward) comes from
its registered description (`config.spec`); the stack never asks which backend it holds.
Incremental decoding keeps one typed `AttentionState` per attention module in `DecodeState`.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.backend import AttentionState
from models.config import ModelConfig
from models.tokenizer import BOS, EOS, PAD, Tokenizer


_TOKENIZER = Tokenizer()
DIGIT_IDS = (_TOKENIZER.stoi["0"], _TOKENIZER.stoi["9"])  # contiguous in the character set


def digit_significance(src: torch.Tensor) -> torch.Tensor:
    """Per token, its digit's place within its run of digits counted from the run's last digit
    (units 1, tens 2, ...), or 0 for a token that is not a digit. (B, S) -> (B, S) long."""
    is_digit = ((src >= DIGIT_IDS[0]) & (src <= DIGIT_IDS[1])).flip(1).long()  # right to left
    counted = is_digit.cumsum(1)
    # the count at the latest non-digit to the right, carried leftwards: where the run started
    run_start = torch.where(is_digit == 0, counted, torch.zeros_like(counted)).cummax(1).values
    return ((counted - run_start) * is_digit).flip(1)


def sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    """Fixed sine/cosine position encodings, (length, d_model)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class FeedForward(nn.Module):
    """The shared ReLU feed-forward d -> d_ff -> d, for backends that keep it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff)
        self.down = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.down(self.dropout(F.relu(self.up(x))))


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_norm = nn.LayerNorm(config.d_model)
        self.self_attn = config.spec.attention(config, "encoder")
        self.ff_norm = nn.LayerNorm(config.d_model)
        self.ff = (config.spec.feed_forward or FeedForward)(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, pad):
        x = x + self.dropout(self.self_attn(self.self_norm(x), context_pad=pad))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        attention = config.spec.attention
        self.self_norm = nn.LayerNorm(config.d_model)
        self.self_attn = attention(config, "causal")
        self.cross_norm = nn.LayerNorm(config.d_model)
        self.cross_attn = attention(config, "cross")
        self.ff_norm = nn.LayerNorm(config.d_model)
        self.ff = (config.spec.feed_forward or FeedForward)(config)
        self.dropout = nn.Dropout(config.dropout)

    def new_state(self) -> "LayerState":
        return LayerState(self.self_attn.new_state(), self.cross_attn.new_state())

    def rewind_self_attention(self, y, after: AttentionState) -> AttentionState:
        """The self-attention state before the positions y (B, T, d) from the state after them
        (SLiM, models/slim.py; only for attention whose state is a sum it can subtract from)."""
        return self.self_attn.rewind(self.self_norm(y), after)

    def forward(self, y, memory, src_pad, state: "LayerState | None" = None):
        self_state, cross_state = (state.self_attn, state.cross_attn) if state is not None else (None, None)
        y = y + self.dropout(self.self_attn(self.self_norm(y), state=self_state))
        y = y + self.dropout(self.cross_attn(self.cross_norm(y), memory, src_pad, state=cross_state))
        return y + self.dropout(self.ff(self.ff_norm(y)))


@dataclass
class LayerState:
    """One decoder layer's decoding state: its self-attention's and its cross-attention's."""

    self_attn: AttentionState
    cross_attn: AttentionState


@dataclass
class DecodeState:
    """Everything incremental decoding carries between steps for one batch of questions."""

    memory: torch.Tensor  # encoder output (B, S, d)
    src_pad: torch.Tensor  # (B, S), True at padding
    layers: list[LayerState]
    position: int = 0  # number of target tokens consumed so far

    def self_attention_nbytes(self) -> int:
        """Bytes held by the decoder self-attention state (grows for softmax, fixed for MemSizer)."""
        return sum(layer.self_attn.nbytes() for layer in self.layers)


class Seq2Seq(nn.Module):
    """Encoder-decoder over characters; `config.backend` picks the plug-in."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=PAD)
        length = max(config.max_source_len, config.max_target_len)
        self.register_buffer("positions", sinusoidal_table(length, config.d_model), persistent=False)
        places = config.max_source_len + 1 + config.digit_offset_max  # row 0: not a digit
        if config.digit_positions == "abacus":  # a number can fill the question, then be shifted
            self.digit_embed = nn.Embedding(places, config.d_model, padding_idx=0)
            nn.init.normal_(self.digit_embed.weight, std=config.d_model ** -0.5)  # unit scale, as embed
            with torch.no_grad():
                self.digit_embed.weight[0].zero_()
        elif config.digit_positions == "abacus-sinusoid":
            table = sinusoidal_table(places, config.d_model)
            table[0] = 0  # not a digit
            self.register_buffer("digit_table", table, persistent=False)
            self.digit_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(config.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        # std d**-0.5 makes embed * sqrt(d) unit-scale like the sinusoids; PyTorch's default N(0, 1)
        # would be ~22x louder than the positions at d=512 and drown where each digit sits
        nn.init.normal_(self.embed.weight, std=config.d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()

    def _embed(self, tokens, positions, role: str, significance=None, token_vectors=None):
        """Token embeddings (or `token_vectors` in their place, (B, T, d)) plus positions."""
        x = (self.embed(tokens) if token_vectors is None else token_vectors) * math.sqrt(self.config.d_model)
        if not self.config.relative_in(role):  # otherwise order lives in that side's attention scores
            x = x + self.positions[positions]
        if significance is not None and self.config.digit_positions == "abacus":
            x = x + self.digit_embed(significance) * math.sqrt(self.config.d_model)
        elif significance is not None:
            x = x + self.digit_proj(self.digit_table[significance])
        return self.dropout(x)

    def encode(self, src: torch.Tensor, token_vectors: torch.Tensor | None = None):
        """Encoder output (B, S, d) and the source padding mask (B, S), True at padding.
        token_vectors (B, S, d) replace the token embeddings of src (attributions interpolate them);
        positions, digit places and padding still come from src."""
        pad = src == PAD
        S = src.shape[1]
        index = torch.arange(S, device=src.device)
        if self.config.source_positions == "end":
            # the last real character (the '?') is position 0, counting backwards
            lengths = (~pad).sum(dim=1, keepdim=True)
            positions = (lengths - 1 - index[None, :]).clamp(min=0)
        else:
            positions = index[None, :].expand(src.shape[0], S)
        significance = digit_significance(src) if self.config.digit_positions != "none" else None
        if significance is not None and self.training and self.config.digit_offset_max:
            shift = torch.randint(0, self.config.digit_offset_max + 1, (src.shape[0], 1), device=src.device)
            significance = torch.where(significance > 0, significance + shift, significance)
        x = self._embed(src, positions, "encoder", significance, token_vectors)
        for layer in self.encoder:
            x = layer(x, pad)
        return self.encoder_norm(x), pad

    def decode(self, tgt_in, memory, src_pad):
        """Logits (B, T, V) for a whole target sequence in parallel (teacher forcing)."""
        return self._decoder(tgt_in, memory, src_pad, start=0, layer_states=[None] * len(self.decoder))

    def _decoder(self, tgt_in, memory, src_pad, start: int, layer_states):
        positions = torch.arange(start, start + tgt_in.shape[1], device=tgt_in.device)[None, :]
        y = self._embed(tgt_in, positions, "causal")
        for layer, layer_state in zip(self.decoder, layer_states):
            y = layer(y, memory, src_pad, layer_state)
        return self.lm_head(self.decoder_norm(y))

    def forward(self, src, tgt_in, tgt_out=None, label_smoothing: float = 0.0):
        """Teacher-forced logits (B, T, V) and, given tgt_out, the mean token cross-entropy
        (against targets smoothed by `label_smoothing`, a training option)."""
        memory, src_pad = self.encode(src)
        logits = self.decode(tgt_in, memory, src_pad)
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=PAD,
                                   label_smoothing=label_smoothing)
        return logits, loss

    def start_decoding(self, src: torch.Tensor) -> DecodeState:
        """Encode the questions once and return an empty incremental-decoding state."""
        memory, src_pad = self.encode(src)
        return DecodeState(memory, src_pad, [layer.new_state() for layer in self.decoder])

    def decode_step(self, tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """Logits (B, V) for the next position after feeding `tokens` (B, T), usually T = 1."""
        logits = self._decoder(tokens, state.memory, state.src_pad, state.position, state.layers)
        state.position += tokens.shape[1]
        return logits[:, -1]

    @torch.no_grad()
    def generate(self, src: torch.Tensor, max_len: int = 30) -> torch.Tensor:
        """Greedy answers (B, <= max_len + 1): characters then eos, PAD after a row's eos."""
        state = self.start_decoding(src)
        B = src.shape[0]
        token = torch.full((B, 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len + 1):  # up to max_len characters, then eos
            logits = self.decode_step(token, state)
            logits[:, [PAD, BOS]] = float("-inf")  # never valid outputs
            token = logits.argmax(dim=-1, keepdim=True)
            out.append(token.masked_fill(done[:, None], PAD))
            done |= token[:, 0] == EOS
            if bool(done.all()):
                break
        else:
            # answers are capped at max_len characters: close rows that never emitted eos
            out[-1] = torch.where(out[-1] == PAD, PAD, EOS)
        return torch.cat(out, dim=1)

    def resume_training(self, passes: int) -> None:
        """Tell every module with a schedule of its own (the Performer's feature redraws) that
        training resumes after `passes` forward passes; the weights come from the state dict."""
        for module in self.modules():
            if module is not self and hasattr(module, "resume_training"):
                module.resume_training(passes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
