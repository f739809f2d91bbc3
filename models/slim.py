"""SLiM training of the decoder (Likhosherstov et al., NeurIPS 2021, "Sub-Linear Memory: How to Make
Performers SLiM", arXiv 2012.11346, Algorithm 1; official code google-research/slim_performer).

A causal layer whose prefix state is a sum (the Performer's S = sum phi(k) v^T, z = sum phi(k)) can
run the target in slices of C positions, carrying each layer's state from slice to slice. SLiM
trains it that way with peak activation memory set by C, not by the target length L:

1. encode once, keeping the encoder's graph; the decoder sees its output as a leaf;
2. run every slice through every decoder layer and the loss without a graph, carrying the
   states forward; only the states after the last slice are kept;
3. walk the slices in reverse: rebuild each layer's state before the slice from the state after
   it (`rewind` subtracts the slice's own terms, layer by layer, since a layer's keys depend on
   the layers below), recompute the slice with those states as leaves, and back-propagate its
   loss together with the gradient that reached its end states from the later slices;
4. the cross-attention sums, computed once from the encoder output, are leaves shared by all
   slices: their gradients accumulate, then flow into the encoder, which is back-propagated once.

The gradients equal plain back-propagation through the whole model (tests/models/test_slim.py).
"""
import dataclasses
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from models.backend import AttentionState
from models.tokenizer import PAD


def _tensors(state: AttentionState) -> dict:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if torch.is_tensor(getattr(state, f.name))}


def _as_leaves(state: AttentionState) -> AttentionState:
    """A copy of the state whose tensors are fresh leaves that collect their gradients."""
    return dataclasses.replace(state, **{k: t.detach().requires_grad_() for k, t in _tensors(state).items()})


def check_slim(model) -> None:
    """A ValueError unless the model's decoder can be trained by slices with exact gradients."""
    missing = [type(layer.self_attn).__name__ for layer in model.decoder if not hasattr(layer.self_attn, "rewind")]
    if any(getattr(layer.self_attn, "decay", None) is not None for layer in model.decoder):
        raise ValueError("SLiM rewinds an additive prefix sum; the decay gate's state is a decayed sum, which "
                         "rewinding would divide by gamma^C: train a gated model without --slim-slice")
    if missing:
        raise ValueError(f"SLiM needs a causal attention with an additive state it can rewind; "
                         f"{model.config.backend}'s {missing[0]} has none")
    if model.config.dropout:
        raise ValueError("SLiM recomputes every slice and needs the same result twice: use --dropout 0")
    if any(getattr(module, "redraw_interval", 0) for module in model.modules()):
        raise ValueError("SLiM runs each decoder layer twice per slice, which a feature-redraw schedule "
                         "would count as two passes: use redraw interval 0")


def _slice_loss(logits, targets, n_tokens, label_smoothing):
    """The slice's share of the batch's mean token cross-entropy."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=PAD,
                           label_smoothing=label_smoothing, reduction="sum") / n_tokens


def _cross_states(model, memory_leaf, src_pad, autocast):
    """The cross-attention states from the encoder output, once, with their graph (a query of zeros
    makes each module compute and store them; its output is not used), and leaf copies for the slices."""
    built = [layer.cross_attn.new_state() for layer in model.decoder]
    with autocast:
        probe = memory_leaf.new_zeros(memory_leaf.shape[0], 1, memory_leaf.shape[-1])
        for layer, state in zip(model.decoder, built):
            layer.cross_attn(probe, memory_leaf, src_pad, state=state)
    return built, [_as_leaves(state) for state in built]


def _forward_without_graph(model, tgt_in, tgt_out, memory_leaf, src_pad, states, bounds, loss_of, autocast):
    """Step 2: every slice through every layer and the loss without a graph, carrying the states;
    returns the loss and the predictions."""
    loss, predictions = torch.zeros((), device=tgt_in.device), []
    with torch.no_grad(), autocast:
        for start, end in bounds:
            logits = model._decoder(tgt_in[:, start:end], memory_leaf, src_pad, start, states)
            loss += loss_of(logits, tgt_out[:, start:end])
            predictions.append(logits.argmax(-1))
    return loss, torch.cat(predictions, dim=1)


def _backward_slice(model, tgt_in, tgt_out, memory_leaf, src_pad, states, start, end, after, after_grads,
                    loss_of, autocast):
    """Step 3 for one slice: rebuild each layer's start state from its end state, recompute the slice
    with those as leaves, back-propagate its loss and the gradient reaching its end states. Returns
    the start states and their gradients, for the slice before."""
    layers = model.decoder
    with torch.enable_grad(), autocast:
        y = model._embed(tgt_in[:, start:end], torch.arange(start, end, device=tgt_in.device)[None, :], "causal")
        ends, starts = [], []
        for i, layer in enumerate(layers):
            # the first slice starts from the empty state itself, not from a subtraction's rounding
            before = (layer.self_attn.new_state() if start == 0
                      else _as_leaves(layer.rewind_self_attention(y.detach(), after[i])))
            starts.append(before)
            state = dataclasses.replace(states[i], self_attn=dataclasses.replace(before))
            y = layer(y, memory_leaf, src_pad, state)
            ends.append(state.self_attn)
        slice_loss = loss_of(model.lm_head(model.decoder_norm(y)), tgt_out[:, start:end])
    outputs, grads = [slice_loss], [None]
    for end_state, grad in zip(ends, after_grads):
        if grad is not None:
            tensors = _tensors(end_state)
            outputs += [tensors[k] for k in grad]
            grads += list(grad.values())
    torch.autograd.backward(outputs, grads)
    return ([dataclasses.replace(s, **{k: t.detach() for k, t in _tensors(s).items()}) for s in starts],
            [{k: t.grad for k, t in _tensors(s).items()} for s in starts])


def slim_backward(model, src, tgt_in, tgt_out, slice_length: int, label_smoothing: float = 0.0,
                  scale: float = 1.0, autocast=None):
    """Accumulate scale * d(mean token loss) into every parameter's .grad by SLiM's algorithm (the
    module docstring's steps). Returns the loss (a detached scalar) and the greedy predictions (B, T),
    as a forward pass would."""
    if slice_length < 1:
        raise ValueError(f"the slice length must be positive, got {slice_length}")
    autocast = autocast or nullcontext()
    T = tgt_in.shape[1]
    bounds = [(start, min(start + slice_length, T)) for start in range(0, T, slice_length)]
    n_tokens = (tgt_out != PAD).sum().clamp(min=1)

    def loss_of(logits, targets):  # the slice's share of the batch's mean token loss
        return _slice_loss(logits, targets, n_tokens, label_smoothing)

    def scaled_loss_of(logits, targets):
        return loss_of(logits, targets) * scale

    with autocast:  # step 1
        memory, src_pad = model.encode(src)
    memory_leaf = memory.detach().requires_grad_()
    cross_built, cross_leaves = _cross_states(model, memory_leaf, src_pad, autocast)
    states = [layer.new_state() for layer in model.decoder]
    for state, cross in zip(states, cross_leaves):
        state.cross_attn = cross
    loss, predictions = _forward_without_graph(model, tgt_in, tgt_out, memory_leaf, src_pad, states, bounds,
                                               loss_of, autocast)
    after = [state.self_attn for state in states]  # each layer's state after the current slice
    after_grads = [None] * len(model.decoder)  # the gradient reaching those states from later slices
    for start, end in reversed(bounds):
        after, after_grads = _backward_slice(model, tgt_in, tgt_out, memory_leaf, src_pad, states, start, end,
                                             after, after_grads, scaled_loss_of, autocast)
    # step 4: the shared cross-attention states, then the encoder, each back-propagated once
    outputs, grads = [], []
    for built, leaves in zip(cross_built, cross_leaves):
        for name, leaf in _tensors(leaves).items():
            if leaf.grad is not None:
                outputs.append(_tensors(built)[name])
                grads.append(leaf.grad)
    if outputs:
        torch.autograd.backward(outputs, grads)
    if memory_leaf.grad is not None:
        memory.backward(memory_leaf.grad)
    return loss, predictions
