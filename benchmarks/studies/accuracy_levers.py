"""Accuracy levers: which training change helps the rare places of the training distribution and
numbers longer than training (DeepMind's extrapolate split), per backend, over seeds.

    python -m benchmarks.studies.accuracy_levers --backends transformer,memsizer --variants baseline,abacus,balanced,abacus-balanced \
        --seeds 0,1 --jobs 2 --max-steps 1200 -- --d-model 128 --d-ff 512 --n-heads 4 \
        --n-encoder-layers 2 --n-decoder-layers 2 --lr 1e-3

Every run trains with the project's CLI on the training distribution only, for the same step
budget, judging itself on its worst place name of a per-place held-out train set (the stopping
rule under study: it stops early only once every place reaches --target). Its curve therefore
shows what stopping on the worst place costs beyond stopping on the average. The final weights
are then measured on fresh questions: per place on the training distribution (--per-place each),
on interpolate and on extrapolate (12-digit numbers, place names up to hundred billions).
Variants are those of benchmarks.studies.time_to_accuracy (one lever each).
"""
import argparse
import hashlib
import json
import statistics
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import STUDY_RESULTS, environment, finish_figure, save
from benchmarks.studies.time_to_accuracy import VARIANTS, check_variants_and_backends, run_groups, training_command
from models import registry
from models.checkpoint import load_checkpoint
from models.task import PLACE_NAMES, generate, generate_per_place
from models.tokenizer import Tokenizer
from training.evaluate import evaluate_examples
from training.train import model_config, parse_args

MODULE = "benchmarks.studies.accuracy_levers"
# fresh questions for the final measurements: seeds no training batch or held-out set uses
FINAL_SEEDS = {"train": "levers:train", "interpolate": "levers:interpolate", "extrapolate": "levers:extrapolate"}
AVERAGE_TARGET = 0.99


def final_sets(per_place: int, size: int) -> dict:
    return {"train": generate_per_place("train", per_place, seed=FINAL_SEEDS["train"]),
            "interpolate": generate("interpolate", size, seed=FINAL_SEEDS["interpolate"]),
            "extrapolate": generate("extrapolate", size, seed=FINAL_SEEDS["extrapolate"])}


def final_scores(run_dir: Path, sets: dict) -> dict:
    """The run's stored weights on the final sets; kept beside the run (keyed by the sets' digest),
    so a later invocation that merges finished runs does not answer the same questions again."""
    digest = hashlib.sha256(json.dumps(sets, sort_keys=True).encode()).hexdigest()
    weights = json.loads((run_dir / "checkpoint" / "config.json").read_text())["weights"]["sha256"]
    stored = run_dir / "final_scores.json"
    if stored.exists():
        kept = json.loads(stored.read_text())
        if (kept["sets_sha256"], kept["weights_sha256"]) == (digest, weights):
            return kept["scores"]
    model, tokenizer, _ = load_checkpoint(run_dir / "checkpoint")
    scores = {}
    for split, examples in sets.items():
        result = evaluate_examples(model, tokenizer, examples)
        scores[split] = {"accuracy": result["accuracy"], "total": result["total"],
                         "per_place": {p: row["accuracy"] for p, row in result["per_place"].items()}}
    stored.write_text(json.dumps({"sets_sha256": digest, "weights_sha256": weights, "scores": scores}))
    return scores


def measure(backend, variant, seed, args, workdir, sets) -> dict:
    """Train one run (unless its report exists from an interrupted study), then measure it."""
    run_dir = Path(workdir) / f"{backend}-{variant}-{seed}"
    command = training_command(backend, variant, seed, args, run_dir)
    if not (run_dir / "report.json").exists():
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = json.loads((run_dir / "report.json").read_text())
    scores = final_scores(run_dir, sets)
    curve = report["curve"]
    reached = next((p for p in curve if p["eval_worst_place"] >= args.target), None)
    # the usual rule, for comparison: the held-out average (every place weighted equally) at 99%
    average = next((p for p in curve if p["eval_accuracy"] >= AVERAGE_TARGET), None)
    return {"backend": backend, "variant": variant, "seed": seed, "command": " ".join(command[1:]),
            "device": report["provenance"]["hardware"]["device"], "steps_run": report["provenance"]["steps"], "wall_seconds": curve[-1]["wall_seconds"] if curve else None,
            "steps_to_worst_place_target": reached["step"] if reached else None,
            "steps_to_average_target": average["step"] if average else None,
            "curve": [{k: p[k] for k in ("step", "wall_seconds", "eval_accuracy", "eval_worst_place", "loss")}
                      for p in curve],
            "train_worst_place": min(scores["train"]["per_place"].values()), **scores}


def applies(backend: str, variant: str) -> bool:
    """Whether the backend can train the variant: its options make a valid config (relative positions,
    rope or alibi, need attention with query-key scores, which MemSizer's memory slots and the
    Performer's kernel features do not have)."""
    args = parse_args(["--model", backend, *VARIANTS[variant]])
    try:
        model_config(args, Tokenizer())
    except ValueError:
        return False
    return True


def merged_runs(previous: dict | None, runs: list[dict]) -> list[dict]:
    """This invocation's runs, plus those of an earlier result that this one did not plan."""
    done = {(r["backend"], r["variant"], r["seed"]) for r in runs}
    kept = [r for r in (previous or {}).get("runs", []) if (r["backend"], r["variant"], r["seed"]) not in done]
    return kept + runs


def lever_table(runs) -> list[dict]:
    """Per backend and variant, the median over seeds of each headline number (and each seed's)."""
    rows = []
    for backend, variant, group in run_groups(runs):
        row = {"backend": backend, "variant": variant, "seeds": [r["seed"] for r in group]}
        for key, pick in (("train_worst_place", lambda r: r["train_worst_place"]),
                          ("train", lambda r: r["train"]["accuracy"]),
                          ("interpolate", lambda r: r["interpolate"]["accuracy"]),
                          ("extrapolate", lambda r: r["extrapolate"]["accuracy"])):
            values = [pick(r) for r in group]
            row[key] = {"median": statistics.median(values), "per_seed": values}
        rows.append(row)
    return rows


def plot(result, path):
    """Per backend: each variant's per-place accuracy on train and extrapolate, one line per seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = result["runs"]
    backends = [b for b in registry.names() if any(r["backend"] == b for r in runs)]
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    fig, axes = plt.subplots(len(backends), 2, figsize=(15, 4.4 * len(backends)), squeeze=False)
    for row, backend in zip(axes, backends):
        for ax, split in zip(row, ("train", "extrapolate")):
            places = [p for p in PLACE_NAMES if any(p in r[split]["per_place"] for r in runs)]
            for r in (r for r in runs if r["backend"] == backend):
                ax.plot(range(len(places)), [r[split]["per_place"].get(p) for p in places],
                        ["-", "--", "-.", ":"][seeds.index(r["seed"]) % 4], marker=".",
                        color=f"C{variants.index(r['variant'])}", label=f"{r['variant']} (seed {r['seed']})")
            ax.set_xticks(range(len(places)), places, rotation=35, ha="right", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{backend}: {split} per place")
            ax.set_ylabel("exact-match accuracy")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, ncol=2)
    finish_figure(fig, f"Accuracy levers after {result['max_steps']} steps (training distribution only)",
                  result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="baseline,abacus,balanced,abacus-balanced")
    parser.add_argument("--backends", default=",".join(b.name for b in registry.backends() if b.shipped))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--max-steps", type=int, default=1200, help="every run's step budget")
    parser.add_argument("--target", type=float, default=0.999,
                        help="worst-place accuracy on the held-out train set at which a run stops early")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-per-place", type=int, default=50, help="held-out questions per place during training")
    parser.add_argument("--per-place", type=int, default=200, help="final train-distribution questions per place")
    parser.add_argument("--size", type=int, default=1000, help="final interpolate and extrapolate questions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each given cores/jobs threads")
    parser.add_argument("--work-dir", default=None, help="keep runs here; finished ones are not redone")
    parser.add_argument("--name", default="accuracy_levers_cpu")
    parser.add_argument("--out", default=None)
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of the existing results file that this invocation does not plan "
                             "(a study grown over several invocations; each one's command is recorded)")
    parser.add_argument("extra", nargs="*", help="more training CLI options after --, e.g. -- --d-model 128")
    args = parser.parse_args(argv)
    check_variants_and_backends(parser, args)
    # the training runs judge themselves on the worst place of a per-place train set
    args.bf16, args.eval_size = False, 1000
    args.extra = ["--eval-split", "train", "--eval-per-place", str(args.eval_per_place),
                  "--target-metric", "worst-place", *args.extra]
    sets = final_sets(args.per_place, args.size)
    plan = [(backend, variant, int(seed)) for variant in args.variants.split(",")
            for seed in args.seeds.split(",") for backend in args.backends.split(",") if applies(backend, variant)]
    out = Path(args.out or STUDY_RESULTS)
    previous = json.loads((out / f"{args.name}.json").read_text()) if args.merge and (
        out / f"{args.name}.json").exists() else None
    final = {"train_per_place": args.per_place, "interpolate": args.size, "extrapolate": args.size,
             "seeds": FINAL_SEEDS}
    # an earlier result's runs are comparable only under the same budget and final questions
    if previous and (previous["max_steps"], previous["target"], previous["final_sets"]) != (
            args.max_steps, args.target, final):
        parser.error("--merge: the earlier study used another --max-steps, --target or final question sets")

    with tempfile.TemporaryDirectory() as temporary, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        workdir = args.work_dir or temporary

        def one(job):
            r = measure(*job, args, workdir, sets)
            print(f"{r['backend']:<12} {r['variant']:<10} seed {r['seed']}: train worst place "
                  f"{r['train_worst_place']:.3f}, train {r['train']['accuracy']:.4f}, interpolate "
                  f"{r['interpolate']['accuracy']:.4f}, extrapolate {r['extrapolate']['accuracy']:.4f} "
                  f"({r['steps_run']} steps)", flush=True)
            return r

        runs = merged_runs(previous, list(pool.map(one, plan)))
    env = environment(runs[-1]["device"], MODULE, argv)
    commands = (previous or {}).get("commands", [previous["environment"]["command"]] if previous else [])
    variants = dict.fromkeys(r["variant"] for r in runs)
    result = {"environment": env, "commands": [*commands, env["command"]],
              "max_steps": args.max_steps, "target": args.target, "final_sets": final,
              "variant_options": {v: VARIANTS[v] for v in variants},
              "runs": runs, "levers": lever_table(runs)}
    if previous and previous.get("note"):
        result["note"] = previous["note"]
    save(args.name, result, out)
    plot(result, out / f"{args.name}.png")
    for row in result["levers"]:
        print(f"{row['backend']:<12} {row['variant']:<10} " + "  ".join(
            f"{k} {row[k]['median']:.4f}" for k in ("train_worst_place", "train", "interpolate", "extrapolate")))


if __name__ == "__main__":
    main()
