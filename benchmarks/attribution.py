"""Which digit each shipped backend reads: Integrated Gradients (models/attribution.py) of each answer
on fresh interpolate and extrapolate questions.

    python -m benchmarks.attribution [--questions 500] [--steps 32]

For each question, among the characters of its number, the digit with the largest attribution is
"the digit read"; the study counts how often that is the digit at the asked place, for right and
wrong answers apart, and per place name on the extrapolate split with the most common offset of
the digit read instead (+1: one place higher, e.g. the hundreds digit for a tens question).
Attributions use the stored checkpoint in float32 at a fixed number of steps, batched; the median
relative convergence delta says how far each backend's integrals can be trusted.
"""
import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import torch

from benchmarks.common import RESULTS, environment, finish_figure, save
from models import registry
from models.attribution import attribute_batch
from models.checkpoint import load_checkpoint
from models.task import PLACE_NAMES, generate, place_of
from training.evaluate import predict

MODULE = "benchmarks.attribution"
SEEDS = {"interpolate": 5101, "extrapolate": 5102}


def read_digit(question: str, scores: list[float]) -> tuple[int, int]:
    """(place asked, place read) counted from the number's units digit (1 = units): the read one is
    the number's digit with the largest attribution."""
    number_end = question.rindex("?")
    number_start = question.rindex(" ", 0, number_end) + 1
    digits = range(number_start, number_end)
    asked = PLACE_NAMES.index(place_of(question)) + 1
    read = max(digits, key=lambda i: scores[i])
    return asked, number_end - read


def summarise(rows: list[dict]) -> dict:
    def share(group):
        return {"count": len(group),
                "reads_asked_digit": sum(r["asked"] == r["read"] for r in group) / len(group) if group else None}
    return {"right": share([r for r in rows if r["right"]]), "wrong": share([r for r in rows if not r["right"]])}


def per_place(rows: list[dict]) -> dict:
    out = {}
    for place in PLACE_NAMES:
        group = [r for r in rows if r["place"] == place]
        if group:
            offsets = Counter(r["read"] - r["asked"] for r in group if r["read"] != r["asked"])
            out[place] = {"count": len(group), "accuracy": sum(r["right"] for r in group) / len(group),
                          "reads_asked_digit": sum(r["read"] == r["asked"] for r in group) / len(group),
                          "most_common_offset": offsets.most_common(1)[0][0] if offsets else None}
    return out


def study(name: str, checkpoints: str, questions: int, steps: int, batch: int) -> dict:
    model, tokenizer, _ = load_checkpoint(f"{checkpoints}/{name}")
    result = {"deltas": []}
    for split, seed in SEEDS.items():
        examples = generate(split, questions, seed=seed)
        asked = [q for q, _ in examples]
        answers = predict(model, tokenizer, asked)
        rows = []
        order = sorted(range(len(asked)), key=lambda i: len(asked[i]))  # similar lengths share a batch
        for start in range(0, len(order), batch):
            chunk = order[start:start + batch]
            for i, attribution in zip(chunk, attribute_batch(model, tokenizer, [asked[i] for i in chunk],
                                                             [answers[i] for i in chunk], steps)):
                place_asked, place_read = read_digit(asked[i], attribution["scores"])
                rows.append({"place": place_of(asked[i]), "asked": place_asked, "read": place_read,
                             "right": answers[i] == examples[i][1]})
                result["deltas"].append(attribution["relative_delta"])
        result[split] = summarise(rows)
        if split == "extrapolate":
            result["extrapolate_per_place"] = per_place(rows)
        print(f"{name} {split}: reads the asked digit in {result[split]['right']['reads_asked_digit']:.0%} of right "
              f"answers ({result[split]['right']['count']}), {result[split]['wrong']['reads_asked_digit'] or 0:.0%} of "
              f"wrong ones ({result[split]['wrong']['count']})", flush=True)
    result["median_relative_delta"] = statistics.median(result.pop("deltas"))
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
        left.bar([i + g * width for i in range(len(names))],
                 [result["backends"][n][split][kind]["reads_asked_digit"] or 0 for n in names], width,
                 label=f"{split}, {kind} answers")
    left.set_xticks([i + width for i in range(len(names))], [registry.get(n).display_name for n in names])
    left.set_ylabel("share reading the asked digit")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    for n in names:
        places = result["backends"][n]["extrapolate_per_place"]
        right.plot(range(len(places)), [p["reads_asked_digit"] for p in places.values()], marker="o",
                   label=registry.get(n).display_name)
        right.set_xticks(range(len(places)), list(places), rotation=35, ha="right", fontsize=8)
    right.set_ylabel("extrapolate: share reading the asked digit")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    finish_figure(fig, "Which digit each backend reads (Integrated Gradients)", result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=500, help="per split and backend")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="questions attributed together")
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
    kept = (earlier.get("backends", {}) if (earlier.get("questions"), earlier.get("steps")) ==
            (args.questions, args.steps) else {})
    measured = {name: study(name, args.checkpoints, args.questions, args.steps, args.batch) for name in backends}
    result = {"environment": environment("cpu", MODULE, argv), "questions": args.questions, "steps": args.steps,
              "backends": {n: measured.get(n, kept.get(n)) for n in registry.names() if n in measured or n in kept}}
    path = save("attribution_cpu", result, out)
    plot(result, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
