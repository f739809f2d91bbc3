"""Which parts of a question an answer relied on, by a method valid for the backend (Captum).

The explained quantity is the answer's centred logit at the first answer position: log p(answer)
minus the mean of log p(d) over the ten digits d. Unlike log p(answer) it does not saturate near
certainty, and blending the question along a path does not make it swing to other digits' answers.
The parts of a question are its features: each digit of the number alone, and each other word
(a run of non-space characters). A blanked feature has every character's token embedding replaced
by the space's; positions, digit places and the padding mask are kept.

- Integrated Gradients (Sundararajan et al., ICML 2017) for backends whose output gradients see
  (Backend.differentiable): the path runs from the question with the number's digits blanked to
  the question itself, so each digit gets a score and the scores add up, by completeness, to the
  change they explain; the steps double from STEPS until the integral misses by at most
  COMPLETENESS_TARGET or MAX_STEPS is reached. The words are scored by occlusion in one batched
  pass (the change when that word alone is blanked), reported apart: they are not part of the sum.
- Shapley value sampling (Strumbelj & Kononenko, 2010) for backends gradients cannot see through
  (MemoryFormer's sign hashes are piecewise constant: bisecting its path leaves jumps that no
  gradient shows). Every feature, digits and words, is a player; along each sampled permutation the
  marginal contributions add up exactly to F(question) - F(every feature blanked), so the scores are
  complete whatever the number of samples. Gradient-free: it needs only forward passes.

Both are computed on the torch float32 model, whatever runtime serves the answers. Every result
names its method, target and baseline, the change it explains and its completeness gap.
"""
import re

import torch
from captum.attr import IntegratedGradients, ShapleyValueSampling

from models.tokenizer import BOS

METHODS = ("integrated_gradients", "shapley_value_sampling")
TARGET = "centred logit of the answer: log p(answer) - mean over the ten digits of log p(digit), first answer position"
BASELINES = {"integrated_gradients": "the number's digits blanked (their token embeddings replaced by the space's; "
                                     "positions and digit places kept)",
             "shapley_value_sampling": "every digit and word blanked (token embeddings replaced by the space's; "
                                       "positions and digit places kept)"}
STEPS = 16  # Gauss-Legendre points to start with (doubled until complete)
MAX_STEPS = 128
SAMPLES = 12  # permutations for Shapley value sampling (completeness holds for any number)
COMPLETENESS_TARGET = 0.05  # |sum of scores - explained change| / |explained change| that counts as complete
_WORD = re.compile(r"\S+")


def features(question: str) -> tuple[list[int], list[list[int]]]:
    """The question's features as character positions: the digits of its number (its last run of
    digits), each a feature alone, and the words (every other run of non-space characters)."""
    numbers = list(re.finditer(r"\d+", question))
    digits = list(range(numbers[-1].start(), numbers[-1].end())) if numbers else []
    words = [[i for i in range(w.start(), w.end()) if i not in digits] for w in _WORD.finditer(question)]
    return digits, [w for w in words if w]


def centred_logit(model, src, answer_id: int, digit_ids: list[int]):
    """A function of token vectors (N, S, d) -> (N,): the answer's centred logit (module docstring);
    N is a whole number of copies of the question, as Captum stacks its steps."""
    def forward(token_vectors):
        n = token_vectors.shape[0]
        memory, pad = model.encode(src.expand(n, -1), token_vectors)
        log_p = model.decode(torch.full((n, 1), BOS, device=src.device), memory, pad)[:, 0].float().log_softmax(-1)
        return log_p[:, answer_id] - log_p[:, digit_ids].mean(-1)
    return forward


def _blanked(inputs, space, positions):
    """The token vectors with the characters at `positions` blanked."""
    out = inputs.clone()
    out[:, positions] = space[:, positions]
    return out


def _occlusion(forward, inputs, space, groups, length) -> list[float]:
    """Per character: F(question) - F(question with its feature blanked alone), in one batched pass."""
    with torch.no_grad():
        full = forward(inputs)
        batch = torch.cat([_blanked(inputs, space, group) for group in groups])
        changes = (full - forward(batch)).tolist()
    scores = [0.0] * length
    for group, change in zip(groups, changes):
        for i in group:
            scores[i] = change / len(group)
    return scores


def _integrated_gradients(forward, inputs, space, digits, steps, max_steps):
    baseline = _blanked(inputs, space, digits)
    with torch.no_grad():
        change = float(forward(inputs) - forward(baseline))
    ig = IntegratedGradients(forward)
    while True:
        attributions = ig.attribute(inputs, baselines=baseline, n_steps=steps, internal_batch_size=64)
        scores = attributions.sum(-1)[0]
        gap = abs(float(scores.sum()) - change) / max(abs(change), 1e-6)
        if gap <= COMPLETENESS_TARGET or steps * 2 > max_steps:
            return scores.tolist(), change, gap, steps
        steps *= 2


def _shapley(forward, inputs, space, groups, samples):
    mask = torch.zeros(inputs.shape[:2], dtype=torch.long, device=inputs.device)  # spaces: feature 0, no effect
    for index, group in enumerate(groups, start=1):
        mask[0, group] = index
    baseline = _blanked(inputs, space, [i for g in groups for i in g])
    with torch.no_grad():
        change = float(forward(inputs) - forward(baseline))
    attributions = ShapleyValueSampling(forward).attribute(
        inputs, baselines=baseline, feature_mask=mask[..., None], n_samples=samples,
        perturbations_per_eval=len(groups) + 1)
    # Captum gives every element of a feature the feature's whole value: spread it over its characters
    sizes = torch.bincount(mask[0], minlength=len(groups) + 1)
    scores = attributions[0, :, 0] / sizes[mask[0]]
    return scores.tolist(), change, abs(float(scores.sum()) - change) / max(abs(change), 1e-6), samples


def explain(model, tokenizer, question: str, answer: str, steps: int = STEPS, max_steps: int = MAX_STEPS,
            samples: int = SAMPLES) -> dict:
    """Per-character attributions of the answer to one question, by the backend's valid method."""
    device = next(model.parameters()).device
    src = tokenizer.batch_questions([question]).to(device)
    answer_id = tokenizer.stoi[answer[:1] or " "]  # answers are one digit; a served answer is in the charset
    forward = centred_logit(model, src, answer_id, [tokenizer.stoi[d] for d in "0123456789"])
    digits, words = features(question)
    groups = [[i] for i in digits] + words
    method = METHODS[0] if model.config.spec.differentiable else METHODS[1]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            inputs = model.embed(src).detach()
            space = model.embed(torch.full_like(src, tokenizer.stoi[" "])).detach()
            if method == "integrated_gradients":
                scores, change, gap, effort = _integrated_gradients(forward, inputs, space, digits, steps, max_steps)
            else:
                scores, change, gap, effort = _shapley(forward, inputs, space, groups, samples)
            occlusion = _occlusion(forward, inputs, space, groups, len(question))
    finally:
        model.train(was_training)
    gradients = method == "integrated_gradients"
    in_words = {i for word in words for i in word}
    return {"characters": list(question), "scores": scores, "method": method, "target": TARGET,
            "baseline": BASELINES[method], "steps": effort if gradients else None,
            "samples": None if gradients else effort, "explained_change": change, "completeness_gap": gap,
            "complete": gap <= COMPLETENESS_TARGET,
            # Integrated Gradients leaves the words out of its sum: their occlusion scores, apart
            "word_scores": [s if i in in_words else 0.0 for i, s in enumerate(occlusion)] if gradients else None,
            "occlusion": occlusion}
