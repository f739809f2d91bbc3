"""Which characters of a question an answer relied on: Integrated Gradients (Sundararajan et al.,
ICML 2017, "Axiomatic Attribution for Deep Networks") through Captum, the same way for every backend.

The attributed quantity is the log-probability of the answer and its end under teacher forcing,
log p(answer, eos | question), as a function of the question's token embeddings. The baseline
replaces every character's token embedding by the space character's and keeps everything else:
positions, digit places, the padding mask. Not the padding token's zero vector: where no absolute
position is added (ALiBi), a zero input makes the first LayerNorm jump at the path's start (LN is
scale-invariant, so every point but the baseline looks like the question itself). A character's
score is the sum of its embedding's attributions; by IG's completeness the scores add up to
F(question) - F(baseline), and Captum's convergence delta is how far the integral's approximation
misses that. The steps double from STEPS until the delta is within DELTA_TARGET of that
difference or MAX_STEPS is reached; the result says which. Hash codes (MemoryFormer) are
piecewise constant, so their jumps are invisible to gradients and its deltas stay large. Gradients
need the torch float32 model, whatever runtime serves the answers.
"""
import torch
from captum.attr import IntegratedGradients

from models.tokenizer import BOS, EOS, PAD, pad_batch

METHOD = "integrated_gradients"
BASELINE = "every character's token embedding replaced by the space's (positions and digit places kept)"
TARGET = "log-probability of the answer and its end under teacher forcing"
STEPS = 32  # Gauss-Legendre points to start with
MAX_STEPS = 64  # doubling past it costs seconds per question for deltas that stay large (Transformer, MemoryFormer)
DELTA_TARGET = 0.05  # |delta| / |F(question) - F(baseline)| that counts as converged


def answer_log_probability(model, src, tgt_in, tgt_out):
    """A function of token vectors (N, S, d) -> (N,) log p(tgt_out | question), padding of tgt_out not
    counted; N is a whole number of copies of the batch, as Captum stacks its steps."""
    def forward(token_vectors):
        repeat = token_vectors.shape[0] // src.shape[0]
        memory, pad = model.encode(src.repeat(repeat, 1), token_vectors)
        targets = tgt_out.repeat(repeat, 1)
        logits = model.decode(tgt_in.repeat(repeat, 1), memory, pad).float()
        picked = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        return picked.masked_fill(targets == PAD, 0.0).sum(-1)
    return forward


def attribute_batch(model, tokenizer, questions: list[str], answers: list[str], steps: int = STEPS,
                    internal_batch_size: int = 256) -> list[dict]:
    """attribute() for many questions at a fixed number of steps (no doubling): for studies."""
    device = next(model.parameters()).device
    src = tokenizer.batch_questions(questions).to(device)
    tgt = pad_batch([[BOS, *(tokenizer.stoi[c] for c in answer), EOS] for answer in answers]).to(device)
    model.eval()
    with torch.enable_grad():
        inputs = model.embed(src).detach()
        baseline = model.embed(torch.full_like(src, tokenizer.stoi[" "])).detach()
        forward = answer_log_probability(model, src, tgt[:, :-1], tgt[:, 1:])
        with torch.no_grad():
            differences = (forward(inputs) - forward(baseline)).tolist()
        attributions, deltas = IntegratedGradients(forward).attribute(
            inputs, baselines=baseline, n_steps=steps, return_convergence_delta=True,
            internal_batch_size=internal_batch_size)
    scores = attributions.sum(-1).tolist()
    return [{"characters": list(q), "scores": row[:len(q)], "convergence_delta": float(delta),
             "log_probability_difference": difference,
             "relative_delta": abs(float(delta)) / max(abs(difference), 1e-6)}
            for q, row, delta, difference in zip(questions, scores, deltas, differences)]


def attribute(model, tokenizer, question: str, answer: str, steps: int = STEPS, max_steps: int = MAX_STEPS) -> dict:
    """Per-character Integrated Gradients of log p(answer | question) for one question."""
    device = next(model.parameters()).device
    src = tokenizer.batch_questions([question]).to(device)
    target = [BOS, *(tokenizer.stoi[c] for c in answer), EOS]  # the answer came from the model: in the charset
    tgt = torch.tensor([target], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            inputs = model.embed(src).detach()
            baseline = model.embed(torch.full_like(src, tokenizer.stoi[" "])).detach()
            forward = answer_log_probability(model, src, tgt[:, :-1], tgt[:, 1:])
            with torch.no_grad():
                difference = float(forward(inputs) - forward(baseline))
            while True:
                attributions, delta = IntegratedGradients(forward).attribute(
                    inputs, baselines=baseline, n_steps=steps, return_convergence_delta=True)
                relative = abs(float(delta)) / max(abs(difference), 1e-6)
                if relative <= DELTA_TARGET or steps * 2 > max_steps:
                    break
                steps *= 2
    finally:
        model.train(was_training)
    return {"characters": list(question), "scores": attributions.sum(-1)[0].tolist(), "method": METHOD,
            "steps": steps, "baseline": BASELINE, "target": TARGET, "convergence_delta": float(delta),
            "log_probability_difference": difference, "relative_delta": relative,
            "converged": relative <= DELTA_TARGET}
