"""The shipped checkpoints' explanations: complete for every backend, and a sanity check (Adebayo et al.,
NeurIPS 2018, "Sanity Checks for Saliency Maps"): the same questions on a randomly initialised model of
the same config get attributions unrelated to the trained model's."""
from pathlib import Path

import pytest
import torch

from models import registry
from models.attribution import COMPLETENESS_TARGET, explain, features
from models.checkpoint import load_checkpoint
from models.seq2seq import Seq2Seq

ROOT = Path(__file__).resolve().parent.parent.parent
QUESTIONS = ["What is the tens digit of 89290?", "What is the hundred thousands digit of 31415926?",
             "What is the billions digit of 7086421953?"]
SHIPPED = [spec.name for spec in registry.backends() if (ROOT / "checkpoints" / spec.name / "config.json").exists()]


def ranks(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).argsort().argsort().double()


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def explained(model, tokenizer, question):
    answer = tokenizer.decode(model.generate(tokenizer.batch_questions([question]))[0].tolist())[:1] or "0"
    return explain(model, tokenizer, question, answer), answer


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    torch.set_num_threads(1)
    return request.param, *load_checkpoint(ROOT / "checkpoints" / request.param)


@pytest.mark.slow
def test_shipped_explanations_are_complete(shipped):
    name, model, tokenizer, _ = shipped
    for question in QUESTIONS:
        result, answer = explained(model, tokenizer, question)
        assert result["complete"] and result["completeness_gap"] <= COMPLETENESS_TARGET, (name, question, result)


@pytest.mark.slow
def test_a_randomly_initialised_model_gets_unrelated_attributions(shipped):
    """Rank correlation, over the number's digits, of the trained model's scores and those of the same
    architecture with fresh random weights, for the trained model's answer: near 0, where a method that
    only echoed the input (say, the digits' own embeddings) would correlate."""
    name, model, tokenizer, _ = shipped
    torch.manual_seed(0)
    fresh = Seq2Seq(model.config).eval()
    correlations = []
    for question in QUESTIONS:
        trained, answer = explained(model, tokenizer, question)
        random = explain(fresh, tokenizer, question, answer)
        digits, _ = features(question)
        correlations.append(spearman([trained["scores"][i] for i in digits], [random["scores"][i] for i in digits]))
    # the trained model puts the asked digit on top; the fresh one has no reason to
    assert abs(sum(correlations) / len(correlations)) < 0.5, (name, correlations)
