"""Fidelity study: MemoryFormer's Memory Block with 0, 1 or 2 expanding bits, and MemSizer's encoder as
MemSizer attention or softmax attention (with and without ALiBi), as their authors built them,
measured side by side against what shipped before.

    python -m benchmarks.studies.accuracy_levers --backends memsizer \\   # (in git history, before benchmarks.comparison)
        --variants memsizer-encoder,softmax-encoder,softmax-encoder-alibi --seeds 0,1 --max-steps 3000 \\
        --work-dir runs/fidelity --name fidelity_memsizer_runs -- --d-model 128 --d-ff 512 --n-heads 4 \\
        --n-encoder-layers 2 --n-decoder-layers 2 --lr 1e-3 --threads 1
    python -m benchmarks.studies.fidelity --runs fidelity_memsizer_runs --work-dir runs/fidelity \\
        --name fidelity_memsizer_cpu

The first command trains two seeds per variant on the lever study's proxy config and measures each
run's stored weights on fresh questions (training distribution per place, interpolate,
extrapolate). This one adds, per variant, what serving and shipping would cost: parameters, the
size of its weights in 4-bit groups, one question's latency and batch-64 answers/s in process
(the first seed's weights, one torch thread), and the medians over seeds.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import STUDY_RESULTS, environment, save
from models.checkpoint import load_checkpoint, save_checkpoint
from models.task import generate
from models.tokenizer import MAX_ANSWER_CHARS, pad_batch

MODULE = "benchmarks.studies.fidelity"


def lever_table(runs) -> list[dict]:
    """Per backend and variant (in the order first seen), the median over seeds of the headline numbers."""
    rows = []
    for key in dict.fromkeys((r["backend"], r["variant"]) for r in runs):
        group = [r for r in runs if (r["backend"], r["variant"]) == key]
        row = {"backend": key[0], "variant": key[1], "seeds": [r["seed"] for r in group]}
        for name, pick in (("train_worst_place", lambda r: r["train_worst_place"]),
                           ("train", lambda r: r["train"]["accuracy"]),
                           ("interpolate", lambda r: r["interpolate"]["accuracy"]),
                           ("extrapolate", lambda r: r["extrapolate"]["accuracy"])):
            values = [pick(r) for r in group]
            row[name] = {"median": statistics.median(values), "per_seed": values}
        rows.append(row)
    return rows


def serving_costs(checkpoint: Path, repeats: int = 30) -> dict:
    """Parameters, 4-bit bytes, one question's median latency and batch-64 answers/s in process."""
    model, tokenizer, _ = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as scratch:
        int4 = save_checkpoint(model, scratch, tokenizer, "int4")["weights"]["bytes"]
    questions = [q for q, _ in generate("interpolate", 64, seed=4242)]
    ids = [tokenizer.encode(q) for q in questions]
    with torch.inference_mode():
        model.generate(pad_batch(ids[:1]), max_len=MAX_ANSWER_CHARS)  # warm up
        single = []
        for i in range(repeats):
            start = time.perf_counter()
            model.generate(pad_batch(ids[i % 64:i % 64 + 1]), max_len=MAX_ANSWER_CHARS)
            single.append(time.perf_counter() - start)
        batches = []
        for _ in range(3):
            start = time.perf_counter()
            model.generate(pad_batch(ids), max_len=MAX_ANSWER_CHARS)
            batches.append(time.perf_counter() - start)
    return {"parameters": model.num_parameters(), "int4_bytes": int4, "single_ms": statistics.median(single) * 1e3,
            "answers_per_second": 64 / statistics.median(batches)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="the accuracy_levers result (in studies/results) to read")
    parser.add_argument("--work-dir", required=True, help="where those runs kept their checkpoints")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import json
    study = json.loads((STUDY_RESULTS / f"{args.runs}.json").read_text())
    levers = {(row["backend"], row["variant"]): row for row in lever_table(study["runs"])}
    rows = []
    for (backend, variant), lever in levers.items():
        runs = sorted((r for r in study["runs"] if (r["backend"], r["variant"]) == (backend, variant)),
                      key=lambda r: r["seed"])
        costs = serving_costs(Path(args.work_dir) / f"{backend}-{variant}-{runs[0]['seed']}" / "checkpoint")
        places = runs[0]["extrapolate"]["per_place"]
        reached = [r for r in runs if r["steps_to_worst_place_target"]]
        rows.append({"backend": backend, "variant": variant, "seeds": [r["seed"] for r in runs],
                     "steps_to_target": [r["steps_to_worst_place_target"] for r in runs],
                     "seconds_median": statistics.median(r["wall_seconds"] for r in reached) if reached else None,
                     "train_worst_place_median": lever["train_worst_place"]["median"],
                     "interpolate_median": lever["interpolate"]["median"],
                     "extrapolate_median": lever["extrapolate"]["median"],
                     "extrapolate_per_place": {p: statistics.median(r["extrapolate"]["per_place"][p] for r in runs)
                                               for p in places},
                     **costs})
        print(f"{backend} {variant}: steps {rows[-1]['steps_to_target']}, extrapolate "
              f"{rows[-1]['extrapolate_median']:.4f}, {costs['single_ms']:.1f} ms, "
              f"{costs['answers_per_second']:.0f} answers/s, {costs['int4_bytes'] / 1e6:.2f} MB", flush=True)
    proxy = " ".join(study["runs"][0]["command"].split(" --eval-split train ")[-1:])
    result = {"environment": environment("cpu", MODULE, argv), "runs": args.runs, "target": study["target"],
              "seeds": sorted({s for row in rows for s in row["seeds"]}), "proxy": proxy, "rows": rows}
    save(args.name, result, args.out or STUDY_RESULTS)


if __name__ == "__main__":
    main()
