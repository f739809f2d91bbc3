"""Integrated Gradients per answer (models/attribution.py) on tiny models of every backend: its defining
property (completeness) where the model is differentiable, and honest deltas where it is not."""
import pytest
import torch

from models.attribution import DELTA_TARGET, attribute
from models.memoryformer import MemoryLayer
from models.tokenizer import BOS, EOS
from tests.conftest import BACKENDS, tiny_model

QUESTION = "What is the hundreds digit of 73045?"


def log_probability(model, src, answer, tokenizer):
    """log p(answer, eos | question) from the model's own teacher-forced forward pass."""
    target = torch.tensor([[BOS, *(tokenizer.stoi[c] for c in answer), EOS]])
    with torch.no_grad():
        logits, _ = model(src, target[:, :-1])
    return float(logits.log_softmax(-1).gather(-1, target[:, 1:, None]).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_add_up_to_the_answers_log_probability_gain_over_the_baseline(backend, tokenizer):
    model = tiny_model(backend)
    src = tokenizer.batch_questions([QUESTION])
    answer = tokenizer.decode(model.generate(src)[0].tolist()) or "0"
    result = attribute(model, tokenizer, QUESTION, answer)
    assert result["characters"] == list(QUESTION) and len(result["scores"]) == len(QUESTION)
    # the attributed function is the answer's log-probability: at the question itself it equals the
    # model's own forward pass (a wrong target or layer would not)
    with torch.no_grad():
        baseline = model.embed(torch.full_like(src, tokenizer.stoi[" "]))
    target = torch.tensor([[BOS, *(tokenizer.stoi[c] for c in answer), EOS]])
    with torch.no_grad():
        memory, pad = model.encode(src, baseline)
        at_baseline = float(model.decode(target[:, :-1], memory, pad).log_softmax(-1)
                            .gather(-1, target[:, 1:, None]).sum())
    assert result["log_probability_difference"] == pytest.approx(
        log_probability(model, src, answer, tokenizer) - at_baseline, abs=1e-4)
    # Captum's delta is exactly what the scores miss of that difference
    assert sum(result["scores"]) - result["convergence_delta"] == pytest.approx(
        result["log_probability_difference"], abs=1e-3)
    hashed = any(isinstance(m, MemoryLayer) for m in model.modules())
    if not hashed:  # completeness: IG's defining property, within the stated tolerance
        assert result["converged"] and result["relative_delta"] <= DELTA_TARGET, result["relative_delta"]
        assert abs(sum(result["scores"]) - result["log_probability_difference"]) <= \
            DELTA_TARGET * abs(result["log_probability_difference"]) + 1e-4


def test_the_asked_digit_matters_to_a_trained_like_answer(tokenizer):
    """Changing the target changes the attributions: the scores are of this answer, not any answer."""
    model = tiny_model("memsizer")
    first, second = (attribute(model, tokenizer, QUESTION, answer)["scores"] for answer in ("0", "7"))
    assert first != second
    assert model.training is False


@pytest.mark.parametrize("backend", ["memsizer", "performer"])
def test_a_batch_of_questions_is_attributed_as_each_alone(backend, tokenizer):
    """The study's batched form: padding after a shorter question changes none of its scores."""
    from models.attribution import attribute_batch
    model = tiny_model(backend)
    questions, answers = [QUESTION, "What is the units digit of 7?"], ["3", "7"]
    batched = attribute_batch(model, tokenizer, questions, answers, steps=32)
    for question, answer, row in zip(questions, answers, batched):
        alone = attribute(model, tokenizer, question, answer, steps=32, max_steps=32)
        assert row["characters"] == list(question)
        assert row["scores"] == pytest.approx(alone["scores"], abs=1e-4)
        assert row["convergence_delta"] == pytest.approx(alone["convergence_delta"], abs=1e-4)
