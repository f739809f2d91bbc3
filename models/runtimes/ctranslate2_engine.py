"""Serve or benchmark a softmax-attention Seq2Seq through CTranslate2, an established inference
engine for Transformer encoder-decoders, running our own weights.

CTranslate2's TransformerSpec expresses our Transformer exactly: pre-norm layers, ReLU
feed-forward, embeddings scaled by sqrt(d) plus our own sinusoid table, one embedding shared by
encoder and decoder, a biased output layer. CTranslate2 counts source positions from the first
token: where ours count backwards from the question's last character ("end"), it reads each
question reversed, which gives every character the same position vector. Self- and
cross-attention ignore order beyond the positions, so the encoder's output is the same set of
vectors. Abacus digit positions become a second source embedding ("source factor") added to the
token's: every source token carries its digit's significance as its factor, and CTranslate2 sums
the two before scaling by sqrt(d), as our embedding does.

ALiBi (linear distance biases, `relative_positions="alibi"`) has a decoder switch in
CTranslate2 (the same slopes 2^(-8h/H); it biases by the key's position, which differs from our
-slope * distance by one constant per query row, which softmax ignores), but no encoder switch.
The encoder's symmetric biases become a T5-style relative attention bias table instead: one
bucket per distance and direction, exact because CTranslate2's buckets are exact below a quarter
of the table's rows and the table has four rows per source position.

It has no spec for rotary positions, nor for other attention kinds (MemSizer's key-value memory, the Performer's random
features) or for hash-table layers (MemoryFormer): `ctranslate2_spec` raises ValueError for them,
and callers keep torch for those backends. `ctranslate2` is imported only when used.
"""
import json
from pathlib import Path

import numpy as np

from models.seq2seq import digit_significance
from models.tokenizer import BOS, EOS, MAX_ANSWER_CHARS, PAD, pad_batch

# how the converted model reads its source, written beside CTranslate2's own files by `convert`
SOURCE_FORMAT_FILE = "placevalue_source.json"
FACTOR_SEPARATOR = "\uffe8"  # CTranslate2's separator between a token and its factors: "￨"


def token_name(index: int) -> str:
    """CTranslate2 vocabularies are strings; ours are ids, some of them whitespace or punctuation."""
    return f"t{index}"


def significance_name(significance: int) -> str:
    return f"s{significance}"


def source_format(config) -> dict:
    """How a model with this config must be fed: reversed questions, digit significance factors."""
    return {"reverse": config.source_positions == "end", "significance": config.digit_positions == "abacus"}


def source_tokens(ids: list[list[int]], fmt: dict) -> list[list[str]]:
    """CTranslate2 source tokens for questions given as our token ids, in the model's source format."""
    rows = [[token_name(t) for t in row] for row in ids]
    if fmt["significance"]:
        significance = digit_significance(pad_batch(ids)).tolist()
        rows = [[f"{name}{FACTOR_SEPARATOR}{significance_name(s)}" for name, s in zip(row, places)]
                for row, places in zip(rows, significance)]
    return [row[::-1] for row in rows] if fmt["reverse"] else rows


def ctranslate2_spec(model):
    """A CTranslate2 TransformerSpec holding `model`'s weights (a softmax-attention Seq2Seq). Long because
    it is a declarative weight map, read top to bottom against the spec's fields."""
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    if not config.spec.runs_on_ctranslate2:
        raise ValueError(f"CTranslate2 has no spec for {config.backend}'s layers (its description does not list "
                         f"the engine among its runtimes)")
    if config.relative_positions not in ("none", "alibi"):
        raise ValueError(f"CTranslate2's encoder-decoder spec has no {config.relative_positions!r} positions")
    alibi = config.relative_positions == "alibi"
    if config.digit_positions not in ("none", "abacus"):
        raise ValueError(f"CTranslate2 has no {config.digit_positions!r} digit position (a projected table)")
    abacus = config.digit_positions == "abacus"
    # copies: the converter rewrites arrays in place (quantization), which must not reach the torch model
    weights = {name: tensor.detach().float().cpu().numpy().copy() for name, tensor in model.state_dict().items()}
    encoder = transformer_spec.TransformerEncoderSpec(
        config.n_encoder_layers, config.n_heads, pre_norm=True, activation=common_spec.Activation.RELU,
        num_source_embeddings=2 if abacus else 1, embeddings_merge=common_spec.EmbeddingsMerge.ADD,
        relative_attention_bias=alibi)
    decoder = transformer_spec.TransformerDecoderSpec(
        config.n_decoder_layers, config.n_heads, pre_norm=True, activation=common_spec.Activation.RELU, alibi=alibi)
    spec = transformer_spec.TransformerSpec(encoder, decoder)

    def linear(target, prefix):
        target.weight, target.bias = weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]

    def fused(target, prefixes):
        target.weight = np.concatenate([weights[f"{p}.weight"] for p in prefixes])
        target.bias = np.concatenate([weights[f"{p}.bias"] for p in prefixes])

    def norm(target, prefix):
        target.gamma, target.beta = weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]

    def feed_forward(target, prefix):
        norm(target.layer_norm, f"{prefix}.ff_norm")
        linear(target.linear_0, f"{prefix}.ff.up")
        linear(target.linear_1, f"{prefix}.ff.down")

    for stack in (spec.encoder, spec.decoder):
        stack.scale_embeddings = True
        if not alibi:  # ALiBi models have no absolute position table
            stack.position_encodings.encodings = model.positions.float().cpu().numpy().copy()
    if alibi:
        bias_table, max_distance = encoder_alibi_table(model.encoder[0].self_attn.alibi_slopes.cpu().numpy(),
                                                       config.max_source_len)
    spec.encoder.embeddings[0].weight = weights["embed.weight"]
    if abacus:  # summed with the token's embedding, then both scaled by sqrt(d), as in Seq2Seq._embed
        spec.encoder.embeddings[1].weight = weights["digit_embed.weight"]
    spec.decoder.embeddings.weight = weights["embed.weight"]
    norm(spec.encoder.layer_norm, "encoder_norm")
    norm(spec.decoder.layer_norm, "decoder_norm")
    linear(spec.decoder.projection, "lm_head")
    for i, layer in enumerate(spec.encoder.layer):
        prefix = f"encoder.{i}"
        norm(layer.self_attention.layer_norm, f"{prefix}.self_norm")
        fused(layer.self_attention.linear[0], [f"{prefix}.self_attn.{p}_proj" for p in "qkv"])
        linear(layer.self_attention.linear[1], f"{prefix}.self_attn.out_proj")
        if alibi:
            layer.self_attention.relative_attention_bias = bias_table
            layer.self_attention.relative_attention_max_distance = np.dtype("int32").type(max_distance)
        feed_forward(layer.ffn, prefix)
    for i, layer in enumerate(spec.decoder.layer):
        prefix = f"decoder.{i}"
        norm(layer.self_attention.layer_norm, f"{prefix}.self_norm")
        fused(layer.self_attention.linear[0], [f"{prefix}.self_attn.{p}_proj" for p in "qkv"])
        linear(layer.self_attention.linear[1], f"{prefix}.self_attn.out_proj")
        norm(layer.attention.layer_norm, f"{prefix}.cross_norm")
        linear(layer.attention.linear[0], f"{prefix}.cross_attn.q_proj")
        fused(layer.attention.linear[1], [f"{prefix}.cross_attn.{p}_proj" for p in "kv"])
        linear(layer.attention.linear[2], f"{prefix}.cross_attn.out_proj")
        feed_forward(layer.ffn, prefix)
    vocabulary = [token_name(i) for i in range(config.vocab_size)]
    spec.register_source_vocabulary(vocabulary)
    if abacus:
        rows = config.max_source_len + 1 + config.digit_offset_max  # the embedding's rows, offsets included
        spec.register_source_vocabulary([significance_name(i) for i in range(rows)])
    spec.register_target_vocabulary(vocabulary)
    spec.config.unk_token = token_name(PAD)  # never produced: the model was never trained to emit pad
    spec.config.bos_token = spec.config.decoder_start_token = token_name(BOS)
    spec.config.eos_token = token_name(EOS)
    spec.config.layer_norm_epsilon = 1e-5  # torch's LayerNorm default, which our model uses
    return spec


def encoder_alibi_table(slopes, max_source_len: int) -> tuple[np.ndarray, int]:
    """The encoder's ALiBi biases as CTranslate2's (T5's) relative attention bias: a (buckets, heads)
    table and its max distance. For a bidirectional bias, a key at relative position n (key minus
    query) falls in bucket |n| for -B/4 < n <= 0 and B/2 + n for 0 < n < B/4, where B is the number of
    rows (further ones are bucketed by log distance): with B = 4 x max_source_len every distance a
    question can have gets its own row, holding -slope * |n| for each head."""
    slopes = np.asarray(slopes, dtype=np.float32).reshape(-1)
    distance = np.arange(2 * max_source_len, dtype=np.float32)
    half = -distance[:, None] * slopes[None, :]  # (B/2, H): keys before the query, then the same after it
    return np.concatenate([half, half]), max_source_len


def convert(model, out_dir, quantization: str | None = None) -> Path:
    """Write a CTranslate2 model directory for `model` (float32 weights, optionally quantized)."""
    from ctranslate2.converters.converter import Converter

    class SpecConverter(Converter):
        def _load(self):
            return ctranslate2_spec(model)

    directory = Path(SpecConverter().convert(str(out_dir), quantization=quantization, force=True))
    (directory / SOURCE_FORMAT_FILE).write_text(json.dumps(source_format(model.config)))
    return directory


class CTranslate2Runner:
    """Greedy answers from a converted model, questions given as our token ids."""

    def __init__(self, model_dir, tokenizer, threads: int, compute_type: str = "float32", device: str = "cpu"):
        import ctranslate2
        self.translator = ctranslate2.Translator(str(model_dir), device=device, compute_type=compute_type,
                                                 intra_threads=threads, inter_threads=1)
        self.tokenizer = tokenizer
        self.source_format = json.loads((Path(model_dir) / SOURCE_FORMAT_FILE).read_text())

    def answer_ids(self, ids: list[list[int]]) -> list[str]:
        results = self.translator.translate_batch(source_tokens(ids, self.source_format), beam_size=1,
                                                  max_decoding_length=MAX_ANSWER_CHARS, max_batch_size=0,
                                                  # never pad (the engine's unk) nor bos, as Seq2Seq.generate
                                                  disable_unk=True, suppress_sequences=[[token_name(BOS)]])
        return [self.tokenizer.decode([int(t[1:]) for t in r.hypotheses[0]] + [EOS]) for r in results]
