"""SLiM (models/slim.py): slice-by-slice training of the Performer's decoder gives the gradients of
plain back-propagation, in float64, for slices of one position up to the whole target."""
import pytest
import torch

from models.slim import check_slim, slim_backward
from models.tokenizer import BOS, PAD
from tests.conftest import tiny_model

QUESTIONS = ["What is the tens digit of 89290?", "What is the units digit of 7?",
             "What is the hundred millions digit of 123456789012?"]


def batch(tokenizer, T=9, seed=0):
    """Questions with padding, and targets of T positions whose ends are padded differently per row."""
    g = torch.Generator().manual_seed(seed)
    src = tokenizer.batch_questions(QUESTIONS)
    tgt = torch.randint(3, 98, (3, T + 1), generator=g)
    tgt[:, 0] = BOS
    tgt[1, 6:] = PAD
    tgt[2, 4:] = PAD
    return src, tgt[:, :-1], tgt[:, 1:]


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("slice_length", [1, 2, 4, 9])
def test_slim_gradients_equal_plain_backpropagation(slice_length, tokenizer):
    model = tiny_model("performer").double().train()
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
    assert sliced.keys() == plain.keys() and len(plain) > 50
    # exact up to rounding: rebuilding a start state subtracts from the end state, and float64's
    # relative 1e-16 grows by the ratio of the two states (the wrong slice's state would be off by O(1))
    for name, grad in plain.items():
        assert torch.allclose(sliced[name], grad, atol=1e-8, rtol=1e-6), (name, (sliced[name] - grad).abs().max())


def test_slim_trains_under_bfloat16_autocast(tokenizer):
    """A few optimizer steps under autocast: finite gradients, and the loss goes down."""
    torch.manual_seed(0)
    model = tiny_model("performer").train()
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
    ("performer", {"dropout": 0.1}, "dropout"),
    ("performer", {"settings": {"features": 32, "redraw_interval": 10}}, "redraw"),
])
def test_slim_refuses_what_it_cannot_train_exactly(backend, overrides, message):
    with pytest.raises(ValueError, match=message):
        check_slim(tiny_model(backend, **overrides))
