"""Per-place accuracy of every shipped checkpoint on the three splits, from the evaluations
recorded in its config.json (`training.evaluate --record`, measured on the stored files).

    python -m benchmarks.shipped_accuracy [--checkpoints checkpoints] [--out benchmarks/results]

Writes shipped_accuracy.json and a plot (one panel per split: the training distribution,
interpolate, extrapolate; one line per backend). Each split shows the checkpoint's largest
record of it run on torch, as the service's /models does.
"""
import argparse
import json
from pathlib import Path

from serving.catalog import RELIABILITY_SPLITS, per_place_reliability
from benchmarks.common import RESULTS, environment, finish_figure, save
from models import registry
from models.task import PLACE_NAMES
from training.recipe import lineage_steps

MODULE = "benchmarks.shipped_accuracy"
RECIPE_FIELDS = ("source_positions", "digit_positions", "relative_positions")
TITLES = {"train": "training distribution", "interpolate": "interpolate", "extrapolate": "extrapolate (longer numbers)"}


def beyond_the_digits(evaluation: dict) -> dict | None:
    """The largest torch record of places beyond a number's digits (answer 0), if any."""
    records = [(name, r) for name, r in evaluation.items()
               if r.get("split") == "beyond" and r.get("runtime", "torch") == "torch"]
    if not records:
        return None
    name, record = max(records, key=lambda item: item[1]["total"])
    return {"evaluation": name, "accuracy": record["accuracy"], "total": record["total"]}


def collect(checkpoints: Path) -> dict:
    """{backend: {recipe, steps, splits: per-split reliability}} for every checkpoint present."""
    out = {}
    for backend in registry.names():
        path = checkpoints / backend / "config.json"
        if not path.exists():
            continue
        config = json.loads(path.read_text())
        arch, provenance = config["architecture"], config.get("provenance", {})
        evaluation = config.get("evaluation", {})
        out[backend] = {"recipe": {f: arch.get(f, "none") for f in RECIPE_FIELDS}
                        | {k: provenance.get("recipe", {}).get(k, 0.0) for k in ("balanced_share", "beyond_share")},
                        "steps": lineage_steps(provenance),
                        "splits": per_place_reliability(evaluation, "torch"),
                        "beyond": beyond_the_digits(evaluation)}
    return out


def plot(result: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = result["checkpoints"]
    fig, axes = plt.subplots(1, len(RELIABILITY_SPLITS), figsize=(17, 4.8), squeeze=False)
    for ax, split in zip(axes[0], ("train", "interpolate", "extrapolate")):
        places = [p for p in PLACE_NAMES if any(p in m["splits"].get(split, {}).get("per_place", {})
                                                for m in models.values())]
        for i, (backend, m) in enumerate(models.items()):
            record = m["splits"].get(split)
            if record:
                ax.plot(range(len(places)), [record["per_place"].get(p) for p in places], marker="o",
                        color=f"C{i}", label=f"{registry.get(backend).display_name} ({record['accuracy']:.2%})")
        ax.set_xticks(range(len(places)), places, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(TITLES[split])
        ax.set_ylabel("exact-match accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    finish_figure(fig, "Shipped checkpoints per place (stored files)", result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default=str(Path(__file__).resolve().parent.parent / "checkpoints"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    result = {"environment": environment("cpu", MODULE, argv), "checkpoints": collect(Path(args.checkpoints))}
    path = save("shipped_accuracy", result, args.out)
    plot(result, Path(args.out) / "shipped_accuracy.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
