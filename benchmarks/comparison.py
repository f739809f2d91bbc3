"""The controlled comparison: every registered backend under one shared recipe, several seeds each.

    python -m benchmarks.comparison                          # proxy config, 3 seeds, every lever row
    python -m benchmarks.comparison --levers base --seeds 0,1,2,3 --jobs 2
    python -m benchmarks.comparison --quick                  # a tiny budget: proves the pipeline
    python -m benchmarks.comparison --finished-only          # the table of the runs finished so far

Every run trains with the project's CLI on the same data stream (per seed), optimizer, schedule,
step budget (no early stop: each run spends the whole budget) and levers; a lever row adds one
setting to every backend alike. Each backend keeps its own settings' defaults (registry). A run
is then measured from its saved files on fresh questions: interpolate, every place of the training
distribution, 12-digit numbers with the trained place names and the unseen ones apart, and places
beyond a number's digits. Finished runs are never retrained and interrupted ones resume, so the
grid can be spread over sessions. Runs are independent subprocesses: --jobs at a time on this
machine, or with --engine ray as Ray tasks (a local Ray instance, or a cluster's with --ray-address,
whose nodes hold the project at the same path and share --work-dir). Each run's learning curve is
also written as TensorBoard events (`tensorboard --logdir runs/comparison`). A run that exits with
an error (training stops itself when it diverges) is listed under `failed_runs` and the command
exits 1 once the finished runs are tabulated.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import RESULTS, environment, finish_figure, save
from models import registry
from models.checkpoint import load_checkpoint
from models.task import asked_places, generate, generate_beyond_digits, generate_per_place
from training.curves import EVENTS_DIR, write_curve
from training.evaluate import evaluate_examples
from training.state import STATE_JSON

MODULE = "benchmarks.comparison"
ROOT = Path(__file__).resolve().parents[1]  # where `python -m training.train` runs, on any node
SIZES = {  # the proxy: minutes per run on 2 cores; the paper config: DESIGN.md section 4
    "proxy": ["--d-model", "128", "--d-ff", "512", "--n-heads", "4", "--n-encoder-layers", "2",
              "--n-decoder-layers", "2"],
    "paper": [],
}
# The shared recipe: everything but the backend, the seed, the size and the lever row
RECIPE = ["--lr", "1e-3", "--warmup-steps", "100", "--schedule", "cosine", "--batch-size", "64",
          "--digit-positions", "abacus", "--source-positions", "start", "--balanced-share", "0.5",
          "--beyond-share", "0.1", "--eval-split", "train", "--target-metric", "worst-place",
          "--weights-format", "float32"]
LEVERS = {  # each a setting every backend takes alike, or per backend the form its attention can take
    "base": [],
    # random place offsets of the digit-significance index (McLeish et al., 2024): the place rows
    # of numbers longer than training are trained too
    "offsets": ["--digit-offset-max", "20"],
    # the same, at three times the budget: the lever study's offset runs read the unseen places
    # while their trained places had not converged when the budget ran out
    "offsets-long": ["--digit-offset-max", "20"],
    # relative positions where each attention can take them: ALiBi on softmax attention's scores; the
    # Performer's encoder rotates its kernel features (RoFormer's linear form); the causal sums of the
    # Performer's features and of MemSizer's memory slots take the decay gate (ALiBi's recurrent
    # form); MemSizer's encoder memory has no scores or order to act on
    "relative": {"transformer": ["--relative-positions", "alibi"], "memoryformer": ["--relative-positions", "alibi"],
                 "performer": ["--relative-positions", "rope", "--performer-causal-gate", "decay"],
                 "memsizer": ["--memsizer-causal-gate", "decay"]},
}


def lever_options(lever: str, backend: str) -> list[str]:
    options = LEVERS[lever]
    return options.get(backend, []) if isinstance(options, dict) else options


BUDGETS = {"full": {"max_steps": 2000, "eval_every": 200, "eval_per_place": 20},
           "quick": {"max_steps": 4, "eval_every": 2, "eval_per_place": 2}}
BUDGET_MULTIPLE = {"offsets-long": 3}  # a lever row that runs longer (the same number of evaluations)


def lever_budget(lever: str, quick: bool) -> dict:
    budget, times = BUDGETS["quick" if quick else "full"], BUDGET_MULTIPLE.get(lever, 1)
    return {**budget, "max_steps": budget["max_steps"] * times, "eval_every": budget["eval_every"] * times}


FINAL_SIZES = {"full": {"per_place": 200, "interpolate": 2000, "extrapolate": 4000, "beyond": 1000},
               "quick": {"per_place": 2, "interpolate": 20, "extrapolate": 40, "beyond": 10}}
COLUMNS = ("train_worst_place", "train", "interpolate", "extrapolate_trained", "extrapolate_unseen", "beyond")


def final_sets(sizes: dict) -> dict:
    """Fresh questions: seeds that no training stream or held-out set draws."""
    return {"train": generate_per_place("train", sizes["per_place"], seed="comparison:train"),
            "interpolate": generate("interpolate", sizes["interpolate"], seed="comparison:interpolate"),
            "extrapolate": generate("extrapolate", sizes["extrapolate"], seed="comparison:extrapolate"),
            "beyond": generate_beyond_digits("train", sizes["beyond"], seed="comparison:beyond")}


def training_command(backend: str, lever: str, seed: int, args, run_dir: Path) -> list[str]:
    budget = lever_budget(lever, args.quick)
    command = [sys.executable, "-m", "training.train", "--model", backend, "--seed", str(seed),
               *SIZES[args.size], *RECIPE, *lever_options(lever, backend),
               "--max-steps", str(budget["max_steps"]), "--eval-every", str(budget["eval_every"]),
               "--eval-per-place", str(budget["eval_per_place"]), "--device", args.device,
               "--threads", str(args.threads), "--save-every-minutes", "3",
               "--out", str(run_dir / "checkpoint"), "--run-dir", str(run_dir)]
    if args.tiny:
        command += ["--d-model", "32", "--d-ff", "64", "--n-heads", "4", "--n-encoder-layers", "1",
                    "--n-decoder-layers", "1"]
    return command


def scores(run_dir: Path, sets: dict) -> dict:
    """The run's stored weights on the final sets, kept beside the run (keyed by the sets' and the
    weights' digests) so a later invocation does not answer the same questions again."""
    sets_digest = hashlib.sha256(json.dumps(sets, sort_keys=True).encode()).hexdigest()
    weights = json.loads((run_dir / "checkpoint" / "config.json").read_text())["weights"]["sha256"]
    stored = run_dir / "comparison_scores.json"
    if stored.exists():
        kept = json.loads(stored.read_text())
        if (kept["sets_sha256"], kept["weights_sha256"]) == (sets_digest, weights):
            return kept["scores"]
    model, tokenizer, _ = load_checkpoint(run_dir / "checkpoint")
    results = {split: evaluate_examples(model, tokenizer, examples) for split, examples in sets.items()}
    trained = set(asked_places("train"))
    extrapolate = results["extrapolate"]["per_place"]

    def pooled(places):
        rows = [row for place, row in extrapolate.items() if place in places]
        return sum(r["correct"] for r in rows) / max(1, sum(r["total"] for r in rows))

    values = {"train_worst_place": min(r["accuracy"] for r in results["train"]["per_place"].values()),
              "train": results["train"]["accuracy"], "interpolate": results["interpolate"]["accuracy"],
              "extrapolate": results["extrapolate"]["accuracy"],
              "extrapolate_trained": pooled(trained), "extrapolate_unseen": pooled(set(extrapolate) - trained),
              "beyond": results["beyond"]["accuracy"],
              "extrapolate_per_place": {p: r["accuracy"] for p, r in extrapolate.items()},
              "train_per_place": {p: r["accuracy"] for p, r in results["train"]["per_place"].items()}}
    stored.write_text(json.dumps({"sets_sha256": sets_digest, "weights_sha256": weights, "scores": values}))
    return values


def run_one(backend: str, lever: str, seed: int, args, sets: dict) -> dict:
    """Train one run to its budget (resuming an interrupted one), then measure its stored files."""
    run_dir = Path(args.work_dir) / args.size / f"{backend}-{lever}-{seed}"
    command = training_command(backend, lever, seed, args, run_dir)
    if not (run_dir / "report.json").exists():
        if args.finished_only:
            return None
        resume = ["--resume"] if (run_dir / STATE_JSON).exists() else []
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train.log", "a") as log:
            finished = subprocess.run(command + resume, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if finished.returncode != 0:  # e.g. diverged: the other runs of the grid go on
            return {"backend": backend, "lever": lever, "seed": seed, "failed": finished.returncode,
                    "log": str(run_dir / "train.log")}
    report = json.loads((run_dir / "report.json").read_text())
    if not (run_dir / EVENTS_DIR).exists():  # a run trained before its events were written
        write_curve(run_dir, report["curve"])
    return {"backend": backend, "lever": lever, "seed": seed, "command": " ".join(["python", *command[1:]]),
            "steps": report["provenance"]["steps"], "wall_seconds": report["provenance"]["wall_seconds"],
            "hardware": report["provenance"]["hardware"], "parameters": report["parameters"],
            "curve": [{"step": p["step"], "worst_place": p["eval_worst_place"], "loss": p["loss"]}
                      for p in report["curve"]],
            **scores(run_dir, sets)}


def run_grid(grid: list[tuple], args, sets: dict) -> list[dict]:
    """Every (backend, lever, seed) cell's run, in grid order: --jobs at a time here, or as Ray tasks
    of --threads CPUs each."""
    if args.engine == "local":
        with ThreadPoolExecutor(args.jobs) as pool:
            return list(pool.map(lambda cell: run_one(*cell, args, sets), grid))
    import ray  # only this engine needs it
    if not args.ray_address:
        # a local instance nices its workers (15) by default, so runs on cores shared with other work
        # would starve; the grid's runs are the work here
        os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address=args.ray_address, include_dashboard=False, logging_level="warning",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        task = ray.remote(num_cpus=args.threads)(run_one)
        shared_sets = ray.put(sets)  # the final questions, stored once for every task
        return ray.get([task.remote(*cell, args, shared_sets) for cell in grid])
    finally:
        ray.shutdown()


def table(runs: list[dict]) -> list[dict]:
    """Per lever and backend: the median and min-max over seeds of every column."""
    rows = []
    for lever in dict.fromkeys(r["lever"] for r in runs):
        for backend in dict.fromkeys(r["backend"] for r in runs):
            group = [r for r in runs if (r["lever"], r["backend"]) == (lever, backend)]
            if group:
                rows.append({"lever": lever, "backend": backend, "seeds": [r["seed"] for r in group],
                             "steps": max(r["steps"] for r in group),
                             **{c: {"median": statistics.median(r[c] for r in group),
                                    "min": min(r[c] for r in group), "max": max(r[c] for r in group)}
                                for c in COLUMNS}})
    return rows


def plot_curves(runs: list[dict], env: dict, path: Path) -> None:
    """Worst-place accuracy against steps per backend, the median line within the seeds' band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levers = list(dict.fromkeys(r["lever"] for r in runs))
    fig, axes = plt.subplots(1, len(levers), figsize=(max(8, 5 * len(levers)), 4.2), squeeze=False)
    for ax, lever in zip(axes[0], levers):
        for backend in dict.fromkeys(r["backend"] for r in runs):
            curves = [r["curve"] for r in runs if (r["lever"], r["backend"]) == (lever, backend) and r["curve"]]
            if not curves:
                continue
            steps = [p["step"] for p in min(curves, key=len)]
            values = [[c[i]["worst_place"] for c in curves] for i in range(len(steps))]
            line, = ax.plot(steps, [statistics.median(v) for v in values], label=f"{backend} ({len(curves)} seeds)")
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                            color=line.get_color())
        ax.set(title=f"lever: {lever}", xlabel="step", ylabel="worst-place held-out accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    finish_figure(fig, "Controlled comparison: learning curves", env, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(registry.names()))
    p.add_argument("--levers", default=",".join(LEVERS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--size", choices=list(SIZES), default="proxy")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each on cores/jobs threads)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores/jobs)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: --jobs runs at a time here; ray: Ray tasks of cores/jobs CPUs each")
    p.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: start one on this machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", default="runs/comparison")
    p.add_argument("--quick", action="store_true", help="a few steps and questions per run")
    p.add_argument("--tiny", action="store_true", help="a tiny model (with --quick: the test suite's)")
    p.add_argument("--out", default=None, help="result name (default comparison_<device>, _quick with --quick)")
    p.add_argument("--results", default=str(RESULTS), help="folder of the result file and figure")
    p.add_argument("--finished-only", action="store_true",
                   help="train nothing: measure and tabulate the runs already finished")
    args = p.parse_args(argv)
    args.backends, args.levers = args.backends.split(","), args.levers.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.backends:
        if name not in registry.names():
            p.error(f"unknown backend {name!r}; registered: {', '.join(registry.names())}")
    for lever in args.levers:
        if lever not in LEVERS:
            p.error(f"unknown lever {lever!r}; known: {', '.join(LEVERS)}")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.work_dir = str(Path(args.work_dir).resolve())  # the same folder from every process and node
    args.out = args.out or f"comparison_{args.device}{'_quick' if args.quick else ''}"
    return args


def main(argv=None):
    args = parse_args(argv)
    sets = final_sets(FINAL_SIZES["quick" if args.quick else "full"])
    # complete seed rows first: lever by lever, seed by seed, every backend
    grid = [(b, lever, s) for lever in args.levers for s in args.seeds for b in args.backends]
    outcomes = [run for run in run_grid(grid, args, sets) if run is not None]
    runs, failed = [r for r in outcomes if "failed" not in r], [r for r in outcomes if "failed" in r]
    env = environment(args.device, MODULE, argv)
    result = {"environment": env, "size": args.size, "recipe": RECIPE, "sizes": SIZES[args.size],
              "levers": {lever: LEVERS[lever] for lever in args.levers},
              "budgets": {lever: lever_budget(lever, args.quick) for lever in args.levers},
              "final_sets": {k: len(v) for k, v in sets.items()}, "planned_runs": len(grid),
              "failed_runs": failed, "table": table(runs), "runs": runs}
    path = save(args.out, result, args.results)
    plot_curves(runs, env, path.with_suffix(".png"))
    print(f"wrote {path}")
    for row in result["table"]:
        cells = "  ".join(f"{c} {row[c]['median']:.3f} [{row[c]['min']:.3f}-{row[c]['max']:.3f}]" for c in COLUMNS)
        print(f"{row['lever']:8s} {row['backend']:13s} seeds {len(row['seeds'])}  {cells}")
    for run in failed:
        print(f"failed: {run['backend']} {run['lever']} seed {run['seed']} (exit {run['failed']}; see {run['log']})")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
