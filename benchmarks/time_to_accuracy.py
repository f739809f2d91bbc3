"""Steps and wall time to a target accuracy for each backend under the default recipe and under
single-lever variants, each run with the project's own training CLI, one after another.

    python -m benchmarks.time_to_accuracy [--variants default,start-positions] [--target 0.99] [--bf16]
    python -m benchmarks.time_to_accuracy --from-runs transformer=runs/a memsizer=runs/b --name NAME

Writes the curves (held-out interpolate accuracy and loss vs steps and vs wall time) as JSON + PNG.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, environment, finish_figure, save

BACKENDS = ("transformer", "memsizer")
VARIANTS = {  # each changes one lever of the default recipe
    "default": [],
    "start-positions": ["--source-positions", "start"],
    "constant-lr": ["--schedule", "constant", "--warmup-steps", "1"],
}

MODULE = "benchmarks.time_to_accuracy"


def run(backend, variant, args, workdir) -> dict:
    run_dir = Path(workdir) / f"{backend}-{variant}"
    cmd = [sys.executable, "-m", "training.train", "--model", backend, "--max-steps", str(args.max_steps),
           "--target-accuracy", str(args.target), "--eval-every", str(args.eval_every),
           "--eval-size", str(args.eval_size), "--device", args.device, "--out", str(run_dir / "checkpoint"),
           "--run-dir", str(run_dir), "--save-every-minutes", "1000", *VARIANTS[variant], *args.extra]
    if args.bf16:
        cmd.append("--bf16")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return summarize(backend, variant, run_dir, args.target, " ".join(cmd[1:]))


def summarize(backend, variant, run_dir, target, command=None) -> dict:
    """One run's curve and its first evaluation at or above `target`, from its report.json."""
    report = json.loads((Path(run_dir) / "report.json").read_text())
    reached = next((p for p in report["curve"] if p["eval_accuracy"] >= target), None)
    return {"backend": backend, "variant": variant, "command": command or report["provenance"]["command"],
            "curve": report["curve"],
            "steps_to_target": reached["step"] if reached else None,
            "seconds_to_target": reached["wall_seconds"] if reached else None,
            "final_accuracy": report["final_accuracy"], "steps_run": report["provenance"]["steps"],
            "hardware": report["provenance"]["hardware"]}


def plot(result, path):
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
        color = f"C{BACKENDS.index(r['backend'])}"
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default,start-positions")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--name", default=None, help="result file name (default time_to_accuracy_<device>)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--from-runs", nargs="+", metavar="BACKEND[:VARIANT]=RUN_DIR", default=None,
                        help="summarize finished training runs (their report.json) instead of training, e.g. "
                             "runs that took an hour in the background: transformer=runs/cpu-transformer "
                             "memsizer:bucketed=runs/cpu-memsizer-bucketed")
    parser.add_argument("--note", default=None, help="a remark stored with the result (e.g. shared cores)")
    parser.add_argument("extra", nargs="*", help="more training CLI options after --, e.g. -- --d-model 64")
    args = parser.parse_args(argv)
    runs = []
    if args.from_runs:
        for spec in args.from_runs:
            name, _, run_dir = spec.partition("=")
            backend, _, variant = name.partition(":")
            if backend not in BACKENDS or not run_dir:
                parser.error(f"--from-runs takes BACKEND[:VARIANT]=RUN_DIR with BACKEND one of "
                             f"{', '.join(BACKENDS)}: {spec!r}")
            runs.append(summarize(backend, variant or "default", run_dir, args.target))
    with tempfile.TemporaryDirectory() as workdir:
        for variant in [] if args.from_runs else args.variants.split(","):
            for backend in BACKENDS:
                r = run(backend, variant, args, workdir)
                runs.append(r)
                print(f"{backend:<12} {variant:<16} steps to {args.target:.0%}: {r['steps_to_target']} "
                      f"({r['seconds_to_target']} s); final {r['final_accuracy']:.4f} after {r['steps_run']} steps",
                      flush=True)
    device = runs[0]["hardware"]["device"]
    result = {"environment": environment(device, MODULE, argv), "target": args.target, "max_steps": args.max_steps,
              "bf16": args.bf16, "runs": runs}
    if args.note:
        result["note"] = args.note
    name = args.name or f"time_to_accuracy_{'gpu' if device.startswith('cuda') else 'cpu'}"
    out = args.out or RESULTS
    save(name, result, out)
    plot(result, f"{out}/{name}.png")


if __name__ == "__main__":
    main()
