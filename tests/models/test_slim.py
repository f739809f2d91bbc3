"""SLiM (models/slim.py): slice-by-slice training of a decoder whose causal state is an additive sum
(the Performer's, MemSizer's) gives the gradients of plain back-propagation: in float64 for slices of
one position up to the whole target, in float32 and under bfloat16 autocast at targets of thousands."""
import pytest
import torch

from models import registry
from models.slim import check_slim, slim_backward
from models.tokenizer import BOS, PAD
from tests.conftest import tiny_model


def slim_capable(name: str) -> bool:
    try:
        check_slim(tiny_model(name))
    except ValueError:
        return False
    return True


SLIM_BACKENDS = [name for name in registry.names() if slim_capable(name)]

QUESTIONS = ["What is the tens digit of 89290?", "What is the units digit of 7?",
             "What is the hundred millions digit of 123456789012?"]


def batch(tokenizer, T=9, seed=0):
    """Questions with padding, and targets of T positions whose ends are padded differently per row."""
    g = torch.Generator().manual_seed(seed)
    src = tokenizer.batch_questions(QUESTIONS)
    tgt = torch.randint(3, 98, (3, T + 1), generator=g)
    tgt[:, 0] = BOS
    tgt[1, T * 2 // 3:] = PAD
    tgt[2, T * 4 // 9:] = PAD
    return src, tgt[:, :-1], tgt[:, 1:]


def test_slim_reaches_every_backend_with_an_additive_causal_state():
    assert SLIM_BACKENDS == ["memsizer", "performer"]


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", SLIM_BACKENDS)
@pytest.mark.parametrize("slice_length", [1, 2, 4, 9])
def test_slim_gradients_equal_plain_backpropagation(backend, slice_length, tokenizer):
    model = tiny_model(backend).double().train()
    src, tgt_in, tgt_out = batch(tokenizer)
    assert (tgt_out == PAD).any() and (src == PAD).any(), "padding on both sides"
    _, loss = model(src, tgt_in, tgt_out, label_smoothing=0.1)
    (loss * 0.5).backward()
    plain = gradients(model)
    model.zero_grad(set_to_none=True)
    slim_loss, predictions = slim_backward(model, src, tgt_in, tgt_out, slice_length, label_smoothing=0.1,
                                           scale=0.5)
    sliced = gradients(model)
    assert torch.allclose(slim_loss, loss.detach(), atol=1e-12)
    with torch.no_grad():
        assert torch.equal(predictions, model(src, tgt_in)[0].argmax(-1))
    assert sliced.keys() == plain.keys() and len(plain) > 30
    # exact up to rounding: rebuilding a start state subtracts from the end state, and float64's
    # relative 1e-16 grows by the ratio of the two states (the wrong slice's state would be off by O(1))
    for name, grad in plain.items():
        assert torch.allclose(sliced[name], grad, atol=1e-8, rtol=1e-6), (name, (sliced[name] - grad).abs().max())


def relative_error(got: dict, exact: dict) -> float:
    """|got - exact| / |exact| over all gradients as one vector."""
    difference = sum(((got[k].double() - exact[k]) ** 2).sum() for k in exact)
    return (difference / sum((g ** 2).sum() for g in exact.values())).sqrt().item()


def long_target_gradients(backend, tokenizer, T, dtype, slice_length=None, bf16=False):
    """Gradients of one batch with a T-position target: plain back-propagation, or SLiM's."""
    model = tiny_model(backend, max_target_len=T).to(dtype).train()
    src, tgt_in, tgt_out = batch(tokenizer, T=T)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    if slice_length:
        slim_backward(model, src, tgt_in, tgt_out, slice_length, autocast=autocast)
    else:
        with autocast:
            _, loss = model(src, tgt_in, tgt_out)
        loss.backward()
    return {k: g.double() for k, g in gradients(model).items()}


@pytest.mark.parametrize("backend", SLIM_BACKENDS)
def test_slim_at_a_long_target_in_float32_matches_float64(backend, tokenizer):
    exact = long_target_gradients(backend, tokenizer, 4096, torch.float64)
    sliced = long_target_gradients(backend, tokenizer, 4096, torch.float32, slice_length=64)
    assert relative_error(sliced, exact) < 1e-4


@pytest.mark.parametrize("backend", SLIM_BACKENDS)
def test_slim_under_bfloat16_at_a_long_target_is_as_exact_as_plain_bfloat16(backend, tokenizer):
    """2,048 target positions in slices of 8: the carried states stay float32, so rebuilding a start
    state by subtraction keeps the prefix (in bfloat16 it lost it, and the normalisers went negative)."""
    exact = long_target_gradients(backend, tokenizer, 2048, torch.float64)
    plain = relative_error(long_target_gradients(backend, tokenizer, 2048, torch.float32, bf16=True), exact)
    sliced = long_target_gradients(backend, tokenizer, 2048, torch.float32, slice_length=8, bf16=True)
    assert all(torch.isfinite(g).all() for g in sliced.values())
    assert relative_error(sliced, exact) <= 1.25 * plain, (relative_error(sliced, exact), plain)


@pytest.mark.parametrize("backend", SLIM_BACKENDS)
def test_slim_trains_under_bfloat16_autocast(backend, tokenizer):
    """A few optimizer steps under autocast: finite gradients, and the loss goes down."""
    torch.manual_seed(0)
    model = tiny_model(backend).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    src, tgt_in, tgt_out = batch(tokenizer)
    losses = []
    for _ in range(6):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = slim_backward(model, src, tgt_in, tgt_out, 4,
                                autocast=torch.autocast("cpu", dtype=torch.bfloat16))
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("backend, overrides, message", [
    ("transformer", {}, "rewind"),
    ("memoryformer", {}, "rewind"),
    ("performer", {"dropout": 0.1}, "dropout"),
    ("performer", {"settings": {"features": 32, "redraw_interval": 10}}, "redraw"),
])
def test_slim_refuses_what_it_cannot_train_exactly(backend, overrides, message):
    with pytest.raises(ValueError, match=message):
        check_slim(tiny_model(backend, **overrides))
