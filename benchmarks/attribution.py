"""Which digit each shipped backend reads: the explanation of each answer (models/attribution.py: the
method valid for the backend) on fresh interpolate and extrapolate questions.

    python -m benchmarks.attribution [--questions 500]

For each question, the number's digit with the largest score is "the digit read", told by its
position: the asked digit itself, another digit of the same value as the asked one (a copy: reading
it gives the same answer, so only its position tells it apart), or another digit. Shares come with
Wilson 95% intervals, for right and wrong answers apart, and per place name on the extrapolate split.
Each backend also reports its median completeness gap and how far the method agrees with occluding
each digit alone (Spearman rank correlation over the number's digits, median over questions).
"""
import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarks.common import RESULTS, environment, finish_figure, save
from models import registry
from models.attribution import explain, features
from models.checkpoint import load_checkpoint
from models.task import PLACE_NAMES, generate, place_of
from training.evaluate import predict, wilson

MODULE = "benchmarks.attribution"
SEEDS = {"interpolate": 5101, "extrapolate": 5102}
READINGS = ("asked", "copy", "other")


def read_digit(question: str, scores: list[float]) -> str:
    """Which digit has the largest score among the number's digits: READINGS."""
    digits, _ = features(question)
    asked = digits[len(digits) - (PLACE_NAMES.index(place_of(question)) + 1)]
    read = max(digits, key=lambda i: scores[i])
    return "asked" if read == asked else "copy" if question[read] == question[asked] else "other"


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (torch.tensor(v).argsort().argsort().double() for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp(min=1e-12))


def shares(rows: list[dict]) -> dict:
    """Per reading: its share of the rows and the share's interval."""
    return {"count": len(rows), **{reading: {"share": sum(r["read"] == reading for r in rows) / len(rows) if rows else None,
                                              "interval": wilson(sum(r["read"] == reading for r in rows), len(rows))}
                                   for reading in READINGS}}


def study(name: str, checkpoints: str, questions: int) -> dict:
    model, tokenizer, config = load_checkpoint(f"{checkpoints}/{name}")
    result, gaps, agreement = {}, [], []
    for split, seed in SEEDS.items():
        examples = [(q, a) for q, a in generate(split, questions, seed=seed)]
        answers = predict(model, tokenizer, [q for q, _ in examples])
        rows = []
        for (question, expected), answer in zip(examples, answers):
            explanation = explain(model, tokenizer, question, answer[:1] or "0")
            digits, _ = features(question)
            gaps.append(explanation["completeness_gap"])
            if len(digits) > 2:
                agreement.append(spearman([explanation["scores"][i] for i in digits],
                                          [explanation["occlusion"][i] for i in digits]))
            rows.append({"place": place_of(question), "read": read_digit(question, explanation["scores"]),
                         "right": answer == expected})
        result[split] = {"right": shares([r for r in rows if r["right"]]),
                         "wrong": shares([r for r in rows if not r["right"]])}
        if split == "extrapolate":
            result["extrapolate_per_place"] = {place: shares([r for r in rows if r["place"] == place])
                                               for place in PLACE_NAMES if any(r["place"] == place for r in rows)}
        right = result[split]["right"]
        print(f"{name} {split}: the asked digit on top in {right['asked']['share']:.0%} of right answers "
              f"({right['count']}), a copy in {right['copy']['share']:.0%}", flush=True)
    result["method"] = explanation["method"]
    result["weights_sha256"] = config["weights"]["sha256"]  # which checkpoint: shipped ones get replaced
    result["median_completeness_gap"] = statistics.median(gaps)
    result["median_agreement_with_occlusion"] = statistics.median(agreement)
    return result


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(result["backends"])
    groups = [("interpolate", "right"), ("extrapolate", "right"), ("extrapolate", "wrong")]
    width = 0.8 / len(groups)
    for g, (split, kind) in enumerate(groups):
        cells = [result["backends"][n][split][kind]["asked"] for n in names]
        # max(0, ...): at a share of 0 or 1 the interval's bound equals it up to rounding
        low = [max(0.0, c["share"] - c["interval"][0]) if c["interval"] else 0 for c in cells]
        high = [max(0.0, c["interval"][1] - c["share"]) if c["interval"] else 0 for c in cells]
        left.bar([i + g * width for i in range(len(names))], [c["share"] or 0 for c in cells], width,
                 yerr=[low, high], capsize=2, label=f"{split}, {kind} answers")
    left.set_xticks([i + width for i in range(len(names))], [registry.get(n).display_name for n in names])
    left.set_ylabel("asked digit scored highest (95% interval)")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    for n in names:
        places = result["backends"][n]["extrapolate_per_place"]
        right.plot(range(len(places)), [p["asked"]["share"] for p in places.values()], marker="o",
                   label=registry.get(n).display_name)
        right.set_xticks(range(len(places)), list(places), rotation=35, ha="right", fontsize=8)
    right.set_ylabel("extrapolate: asked digit scored highest")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    finish_figure(fig, "Which digit each backend reads (its valid attribution method)", result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=500, help="per split and backend")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backends", default=None, help="comma-separated (default: every shipped backend); "
                        "the others keep their rows of an earlier result with the same settings")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends.split(",") if args.backends else [b.name for b in registry.backends() if b.shipped]
    out = Path(args.out or RESULTS)
    earlier = json.loads((out / "attribution_cpu.json").read_text()) if (out / "attribution_cpu.json").exists() else {}
    kept = earlier.get("backends", {}) if (earlier.get("questions"), earlier.get("version")) == (args.questions, 2) else {}
    env = environment("cpu", MODULE, argv)
    # each row names the run that measured it, since --backends keeps the other rows of an earlier one
    measured = {name: {**study(name, args.checkpoints, args.questions), "measured": env} for name in backends}
    result = {"environment": env, "questions": args.questions, "version": 2,
              "backends": {n: measured.get(n, kept.get(n)) for n in registry.names() if n in measured or n in kept}}
    path = save("attribution_cpu", result, out)
    plot(result, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
