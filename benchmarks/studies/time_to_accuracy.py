"""Steps and wall time to a target accuracy for each backend under the default recipe and under
single-lever variants, each run with the project's own training CLI.

    python -m benchmarks.studies.time_to_accuracy [--variants baseline,default] [--target 0.99] [--bf16]
    python -m benchmarks.studies.time_to_accuracy --variants default,curriculum --seeds 0,1,2 --jobs 2 -- --d-model 128
    python -m benchmarks.studies.time_to_accuracy --from-runs transformer=runs/a memsizer=runs/b --name NAME

Writes the curves (held-out interpolate accuracy and loss vs steps and vs wall time) as JSON + PNG,
and, per backend and variant, the median steps to the target over the seeds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import STUDY_RESULTS, environment, finish_figure, save
from models import registry

VARIANTS = {  # each changes one lever of the default recipe
    "default": [],
    "start-positions": ["--source-positions", "start"],  # the default since abacus-balanced was adopted
    "constant-lr": ["--schedule", "constant", "--warmup-steps", "1"],
    # 100 steps each of easy, medium, hard: the first 300 steps, about where the default leaves the plateau
    "curriculum": ["--curriculum-steps", "100"],
    "label-smoothing": ["--label-smoothing", "0.1"],
    "dropout-0.1": ["--dropout", "0.1"],  # the default before dropout 0 was measured to halve the steps
    "no-dropout": ["--dropout", "0"],  # explicit, for studies made while 0.1 was the default
    # backend settings (give --backends too): a backend ignores the others' flags
    "redraw-never": ["--performer-redraw-interval", "0"],
    "redraw-100": ["--performer-redraw-interval", "100"],
    "tau-2": ["--memoryformer-tau", "2"],
    "tau-8": ["--memoryformer-tau", "8"],
    "official-weights": ["--memoryformer-weighting", "official"],
    # accuracy levers (benchmarks.studies.accuracy_levers): rare places and numbers longer than training.
    # Each spells out all three settings, so it means the same whatever the CLI's defaults are.
    # baseline: the recipe before abacus-balanced became the CLI default
    "baseline": ["--digit-positions", "none", "--source-positions", "end", "--balanced-share", "0"],
    # abacus: each digit also embeds its place in its number (McLeish et al., 2024), and the other
    # tokens count from the question's start, so the place name's position does not move with the
    # number's length (counted from the end, a longer number pushes it to positions never paired
    # with that place in training)
    "abacus": ["--digit-positions", "abacus", "--source-positions", "start", "--balanced-share", "0"],
    # abacus with each training question's places shifted by a random offset up to 20 (McLeish et
    # al., 2024): the rows of 11- and 12-digit numbers get trained, and places are read relative to
    # the units digit
    "abacus-offset": ["--digit-positions", "abacus", "--digit-offset-max", "20", "--source-positions", "start",
                      "--balanced-share", "0"],
    "abacus-end": ["--digit-positions", "abacus", "--source-positions", "end", "--balanced-share", "0"],
    # places through a learned projection of fixed sinusoids: unseen places (11, 12 digits) continue
    # the trained ones instead of being untrained rows
    "abacus-sinusoid": ["--digit-positions", "abacus-sinusoid", "--source-positions", "start", "--balanced-share", "0"],
    # half of every batch drawn with place names uniform (inside the training support)
    "balanced": ["--digit-positions", "none", "--source-positions", "end", "--balanced-share", "0.5"],
    # the CLI default since it was measured
    "abacus-balanced": ["--digit-positions", "abacus", "--source-positions", "start", "--balanced-share", "0.5"],
    "abacus-balanced-offset": ["--digit-positions", "abacus", "--digit-offset-max", "20", "--source-positions",
                               "start", "--balanced-share", "0.5"],
    # rotary positions (Su et al., 2021) instead of the absolute sinusoids, for the backends whose
    # attention has query-key scores (Transformer, MemoryFormer): alone, and with the adopted recipe
    "rope": ["--relative-positions", "rope", "--digit-positions", "none", "--source-positions", "start",
             "--balanced-share", "0"],
    "abacus-balanced-rope": ["--relative-positions", "rope", "--digit-positions", "abacus", "--source-positions",
                             "start", "--balanced-share", "0.5"],
    # linear attention biases (Press et al., 2022) instead of the absolute sinusoids, same backends as rope
    "alibi": ["--relative-positions", "alibi", "--digit-positions", "none", "--source-positions", "start",
              "--balanced-share", "0"],
    "abacus-balanced-alibi": ["--relative-positions", "alibi", "--digit-positions", "abacus", "--source-positions",
                              "start", "--balanced-share", "0.5"],
    # both length devices together: ALiBi's distance biases and random place offsets (which train the
    # abacus rows of 11- and 12-digit numbers)
    "abacus-balanced-offset-alibi": ["--relative-positions", "alibi", "--digit-positions", "abacus",
                                     "--digit-offset-max", "20", "--source-positions", "start",
                                     "--balanced-share", "0.5"],
    # the authors' configurations (benchmarks/studies/fidelity.md): MemoryFormer's Memory Block with
    # 0, 1 or 2 expanding bits on the shipped recipe (ALiBi), and MemSizer's encoder as MemSizer
    # attention or softmax attention, the latter with and without ALiBi in it
    **{f"alibi-extra-bits-{e}": ["--relative-positions", "alibi", "--digit-positions", "abacus",
                                 "--source-positions", "start", "--balanced-share", "0.5",
                                 "--memoryformer-extra-bits", str(e)] for e in (0, 1, 2)},
    "memsizer-encoder": ["--digit-positions", "abacus", "--source-positions", "start", "--balanced-share", "0.5",
                         "--memsizer-encoder", "memsizer"],
    "softmax-encoder": ["--digit-positions", "abacus", "--source-positions", "start", "--balanced-share", "0.5",
                        "--memsizer-encoder", "softmax"],
    "softmax-encoder-alibi": ["--relative-positions", "alibi", "--digit-positions", "abacus", "--source-positions",
                              "start", "--balanced-share", "0.5", "--memsizer-encoder", "softmax"],
}

MODULE = "benchmarks.studies.time_to_accuracy"


def training_command(backend, variant, seed, args, run_dir) -> list[str]:
    """The training CLI call of one run: `args` gives max_steps, target, eval_every, eval_size,
    device, bf16, jobs and extra (more training options, which win over these)."""
    cmd = [sys.executable, "-m", "training.train", "--model", backend, "--seed", str(seed), "--max-steps", str(args.max_steps),
           "--target-accuracy", str(args.target), "--eval-every", str(args.eval_every),
           "--eval-size", str(args.eval_size), "--device", args.device, "--out", str(run_dir / "checkpoint"),
           # this study's target is held-out interpolate accuracy (the accuracy-lever study overrides it)
           "--eval-split", "interpolate", "--target-metric", "accuracy",
           "--run-dir", str(run_dir), "--save-every-minutes", "1000", *VARIANTS[variant], *args.extra]
    if args.bf16:
        cmd.append("--bf16")
    if args.jobs > 1 and "--threads" not in args.extra:  # parallel runs split the cores between them
        cmd += ["--threads", str(max(1, (os.cpu_count() or 1) // args.jobs))]
    return cmd


def run(backend, variant, seed, args, workdir) -> dict:
    run_dir = Path(workdir) / f"{backend}-{variant}-{seed}"
    if (run_dir / "report.json").exists():  # finished in an earlier, interrupted invocation (--work-dir)
        return summarize(backend, variant, run_dir, args.target)
    cmd = training_command(backend, variant, seed, args, run_dir)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return summarize(backend, variant, run_dir, args.target, " ".join(cmd[1:]))


def summarize(backend, variant, run_dir, target, command=None) -> dict:
    """One run's curve and its first evaluation at or above `target`, from its report.json."""
    report = json.loads((Path(run_dir) / "report.json").read_text())
    reached = next((p for p in report["curve"] if p["eval_accuracy"] >= target), None)
    return {"backend": backend, "variant": variant, "seed": report["provenance"]["seed"],
            "command": command or report["provenance"]["command"],
            "curve": report["curve"],
            "steps_to_target": reached["step"] if reached else None,
            "seconds_to_target": reached["wall_seconds"] if reached else None,
            "final_accuracy": report["final_accuracy"], "steps_run": report["provenance"]["steps"],
            "hardware": report["provenance"]["hardware"]}


def check_variants_and_backends(parser, args) -> None:
    """Stop with a usage error naming any unknown --variants or --backends entry."""
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    unknown += [b for b in args.backends.split(",") if b not in registry.names()]
    if unknown:
        parser.error(f"unknown variant or backend {', '.join(unknown)}: variants are {', '.join(VARIANTS)}")


def run_groups(runs):
    """(backend, variant, its runs over seeds): backends in registry order, variants as first run."""
    for backend in registry.names():
        for variant in dict.fromkeys(r["variant"] for r in runs):
            group = [r for r in runs if r["backend"] == backend and r["variant"] == variant]
            if group:
                yield backend, variant, group


def lever_table(runs) -> list[dict]:
    """Per backend and variant: steps to the target of each seed and their median (a seed that
    never reached the target counts as its steps run, so the median is a lower bound then)."""
    rows = []
    for backend, variant, group in run_groups(runs):
        steps = [r["steps_to_target"] or r["steps_run"] for r in group]
        reached = [r for r in group if r["steps_to_target"]]
        rows.append({"backend": backend, "variant": variant, "seeds": [r["seed"] for r in group],
                     "steps_to_target": [r["steps_to_target"] for r in group],
                     "median_steps": statistics.median(steps), "reached": len(reached), "runs": len(group),
                     "median_seconds": statistics.median([r["seconds_to_target"] for r in reached]) if reached else None})
    return rows


def plot(result, path):
    if len({r["seed"] for r in result["runs"]}) > 1:
        return plot_levers(result, path)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    # minutes where runs take minutes (CPU), seconds where they take seconds (GPU)
    longest = max(p["wall_seconds"] for r in result["runs"] for p in r["curve"])
    unit, scale = ("minutes", 60.0) if longest > 600 else ("seconds", 1.0)
    variants = list(dict.fromkeys(r["variant"] for r in result["runs"]))
    for r in result["runs"]:
        style = ["-", "--", "-.", ":"][variants.index(r["variant"]) % 4]  # color = backend, line = variant
        color = f"C{registry.names().index(r['backend'])}"
        label = f"{r['backend']} ({r['variant']})"
        steps = [p["step"] for p in r["curve"]]
        axes[0].plot(steps, [p["eval_accuracy"] for p in r["curve"]], style, marker=".", color=color, label=label)
        axes[1].plot([p["wall_seconds"] / scale for p in r["curve"]], [p["eval_accuracy"] for p in r["curve"]], style,
                     marker=".", color=color, label=label)
        axes[2].plot(steps, [p["loss"] for p in r["curve"]], style, marker=".", color=color, label=label)
    for ax in axes[:2]:
        ax.axhline(result["target"], color="grey", linestyle=":", linewidth=1)
    for ax, (x, y) in zip(axes, [("steps", "held-out accuracy"), (f"wall {unit}", "held-out accuracy"),
                                 ("steps", "training loss (EMA)")]):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    finish_figure(fig, f"Time to {result['target']:.0%} interpolate accuracy, paper config, batch 64",
                  result["environment"], path)


def plot_levers(result, path):
    """Several seeds: one panel per backend, colour = variant, line style = seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    backends = [b for b in registry.names() if any(r["backend"] == b for r in result["runs"])]
    variants = list(dict.fromkeys(r["variant"] for r in result["runs"]))
    seeds = sorted({r["seed"] for r in result["runs"]})
    fig, axes = plt.subplots(1, len(backends), figsize=(7.5 * len(backends), 4.8), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for r in (r for r in result["runs"] if r["backend"] == backend):
            ax.plot([p["step"] for p in r["curve"]], [p["eval_accuracy"] for p in r["curve"]],
                    ["-", "--", "-.", ":"][seeds.index(r["seed"]) % 4], color=f"C{variants.index(r['variant'])}",
                    label=f"{r['variant']} (seed {r['seed']})", linewidth=1.2)
        ax.axhline(result["target"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(backend)
        ax.set_xlabel("steps")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    title = f"Steps to {result['target']:.0%} interpolate accuracy per recipe lever"
    finish_figure(fig, title + (f" ({result['note']})" if result.get("note") else ""), result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="baseline,default")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, each a separate run")
    parser.add_argument("--backends", default=",".join(registry.names()))
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each given cores/jobs torch threads (steps to target do not depend "
                             "on it; wall times then include the sharing)")
    parser.add_argument("--name", default=None, help="result file name (default time_to_accuracy_<device>)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--from-runs", nargs="+", metavar="BACKEND[:VARIANT]=RUN_DIR", default=None,
                        help="summarize finished training runs (their report.json) instead of training, e.g. "
                             "runs that took an hour in the background: transformer=runs/cpu-transformer "
                             "memsizer:bucketed=runs/cpu-memsizer-bucketed")
    parser.add_argument("--work-dir", default=None,
                        help="keep each run's state and report here; runs already finished there are not redone, "
                             "so an interrupted study resumes (default: a temporary directory)")
    parser.add_argument("--append", action="store_true",
                        help="add these runs to the existing result file --name instead of replacing it "
                             "(e.g. a new backend's run beside runs whose directories are gone)")
    parser.add_argument("--note", default=None, help="a remark stored with the result (e.g. shared cores)")
    parser.add_argument("extra", nargs="*", help="more training CLI options after --, e.g. -- --d-model 64")
    args = parser.parse_args(argv)
    check_variants_and_backends(parser, args)
    runs = []
    if args.from_runs:
        for spec in args.from_runs:
            name, _, run_dir = spec.partition("=")
            backend, _, variant = name.partition(":")
            if backend not in registry.names() or not run_dir:
                parser.error(f"--from-runs takes BACKEND[:VARIANT]=RUN_DIR with BACKEND one of "
                             f"{', '.join(registry.names())}: {spec!r}")
            runs.append(summarize(backend, variant or "default", run_dir, args.target))
    plan = [] if args.from_runs else [(backend, variant, int(seed)) for variant in args.variants.split(",")
                                      for seed in args.seeds.split(",") for backend in args.backends.split(",")]

    def one(job):
        r = run(*job, args, workdir)
        print(f"{r['backend']:<12} {r['variant']:<16} seed {r['seed']}: steps to {args.target:.0%}: "
              f"{r['steps_to_target']} ({r['seconds_to_target']} s); final {r['final_accuracy']:.4f} "
              f"after {r['steps_run']} steps", flush=True)
        return r

    with tempfile.TemporaryDirectory() as temporary, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        workdir = args.work_dir or temporary
        runs += list(pool.map(one, plan))  # in plan order, whatever order they finish in
    device = runs[0]["hardware"]["device"]
    result = {"environment": environment(device, MODULE, argv), "target": args.target, "max_steps": args.max_steps,
              "bf16": args.bf16, "runs": runs, "levers": lever_table(runs),
              # as they were when measured: the CLI's defaults, and so these options, can change later
              "variant_options": {v: VARIANTS[v] for v in dict.fromkeys(r["variant"] for r in runs) if v in VARIANTS}}
    if args.note:
        result["note"] = args.note
    name = args.name or f"time_to_accuracy_{'gpu' if device.startswith('cuda') else 'cpu'}"
    out = args.out or STUDY_RESULTS
    existing = Path(out) / f"{name}.json"
    if args.append and existing.exists():
        added, result = result, json.loads(existing.read_text())
        result["runs"] += added["runs"]
        result["levers"] = lever_table(result["runs"])
        result["variant_options"].update(added["variant_options"])
        result.setdefault("additions", []).append({"environment": added["environment"], "note": args.note})
    save(name, result, out)
    plot(result, f"{out}/{name}.png")


if __name__ == "__main__":
    main()
