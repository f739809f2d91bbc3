"""Explanations (models/attribution.py) on tiny models of every backend: the explained quantity is the
model's own, the method is the one valid for the backend, and its scores are complete."""
import pytest
import torch

from models import registry
from models.attribution import COMPLETENESS_TARGET, explain, features
from models.tokenizer import BOS
from tests.conftest import BACKENDS, tiny_model

QUESTION = "What is the hundreds digit of 73045?"


def centred_logit(model, tokenizer, token_vectors, src, answer):
    """The answer's centred logit from the model's own teacher-forced forward pass."""
    with torch.no_grad():
        memory, pad = model.encode(src, token_vectors)
        log_p = model.decode(torch.tensor([[BOS]]), memory, pad)[0, 0].log_softmax(-1)
    return float(log_p[tokenizer.stoi[answer]] - log_p[[tokenizer.stoi[d] for d in "0123456789"]].mean())


def test_features_are_the_numbers_digits_and_the_words():
    digits, words = features("What is the tens digit of 89290?")
    assert ["".join("What is the tens digit of 89290?"[i] for i in w) for w in words] == \
        ["What", "is", "the", "tens", "digit", "of", "?"]
    assert digits == list(range(26, 31))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_add_up_to_the_change_they_explain(backend, tokenizer):
    model = tiny_model(backend)
    src = tokenizer.batch_questions([QUESTION])
    answer = tokenizer.decode(model.generate(src)[0].tolist())[:1] or "0"
    result = explain(model, tokenizer, QUESTION, answer)
    assert result["characters"] == list(QUESTION) and len(result["scores"]) == len(QUESTION)
    assert result["method"] == ("integrated_gradients" if registry.get(backend).differentiable
                                else "shapley_value_sampling")
    # the explained change is the model's own: the centred logit at the question less at the baseline
    digits, words = features(QUESTION)
    blanked = {i for i in digits} | ({i for w in words for i in w} if result["method"] == "shapley_value_sampling"
                                     else set())
    with torch.no_grad():
        inputs = model.embed(src)
        space = model.embed(torch.full_like(src, tokenizer.stoi[" "]))
        baseline = inputs.clone()
        baseline[:, sorted(blanked)] = space[:, sorted(blanked)]
    expected = (centred_logit(model, tokenizer, inputs, src, answer)
                - centred_logit(model, tokenizer, baseline, src, answer))
    assert result["explained_change"] == pytest.approx(expected, abs=1e-4)
    # completeness: the defining property of both methods, within the stated tolerance
    assert result["complete"] and result["completeness_gap"] <= COMPLETENESS_TARGET, result["completeness_gap"]
    assert abs(sum(result["scores"]) - expected) <= COMPLETENESS_TARGET * abs(expected) + 1e-4
    # what the method leaves out scores nothing: Integrated Gradients moves only the digits
    if result["method"] == "integrated_gradients":
        assert all(s == 0 for i, s in enumerate(result["scores"]) if i not in digits)
        assert any(result["word_scores"][i] for w in words for i in w)
    assert model.training is False


def test_the_scores_are_of_this_answer(tokenizer):
    """Another target answer, other scores."""
    model = tiny_model("memsizer")
    first, second = (explain(model, tokenizer, QUESTION, answer)["scores"] for answer in ("0", "7"))
    assert first != second
