"""Training-throughput levers, each changed on its own against the fp32 baseline (batch 64),
both backends alternating within each measurement; examples/s over all timed steps.

    python -m benchmarks.training_levers [--device cpu] [--steps 8] [--levers NAME,...] [--tiny]

bf16 autocast is measured by benchmarks.train_throughput (minutes per step on CPUs without
AMX). Bucketing (`training.train --bucket-pool`) can save at most the share of padding in the
encoder's input, which is printed with and without it. torch.compile's compilation time is the
warmup column; its steady-state throughput is the ex/s column.
"""
import argparse

import torch

from benchmarks.common import RESULTS, TINY_ARCH, environment, save
from benchmarks.train_throughput import BACKENDS, measure
from models.tokenizer import PAD, Tokenizer
from training.data import bucketed_batch, training_batch
from training.train import make_batch

MODULE = "benchmarks.training_levers"
BUCKET_POOL = 8


def padding_share(batch_size: int, stream, batches: int = 200) -> float:
    """Fraction of source positions that are padding in `stream(seed, rank, index, batch_size)`."""
    tokenizer, pad, total = Tokenizer(), 0, 0
    for i in range(batches):
        src, _, _ = make_batch(stream(0, 0, i, batch_size), tokenizer, "cpu")
        pad += int((src == PAD).sum())
        total += src.numel()
    return pad / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=BUCKET_POOL, help="timed steps per lever and backend")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--levers", default=None, help="comma-separated subset of the lever names")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default=None,
                        help="result file name (default training_levers_<device>); give a subset run its own")
    args = parser.parse_args(argv)
    arch = TINY_ARCH if args.tiny else {}
    threads = torch.get_num_threads()
    default_opt = {"fused": args.device.startswith("cuda")}

    # Every lever trains on the same examples in its timed steps: one whole bucketing pool
    # (indices BUCKET_POOL..2*BUCKET_POOL-1 of the stream); warmup steps come before it.
    def plain(seed, rank, index, size):
        return training_batch(seed, rank, index + BUCKET_POOL - args.warmup, size)

    def bucketed(seed, rank, index, size):
        return bucketed_batch(seed, rank, index + BUCKET_POOL - args.warmup, size, pool=BUCKET_POOL)

    baseline = dict(batch_size=64, threads=threads, optimizer=default_opt, batches=plain, compile=False,
                    accumulation=1)
    levers = {
        "baseline: fp32 batch 64": {},
        "batch 128": dict(batch_size=128),
        "batch 256": dict(batch_size=256),
        # the same 256 examples per update as batch 256, at batch 64's memory
        "batch 256 as 4 x 64 accumulated": dict(accumulation=4),
        f"{max(1, threads // 2)} torch thread(s)": dict(threads=max(1, threads // 2)),
        "AdamW fused": dict(optimizer={"fused": True}),
        "AdamW for-loop (foreach off)": dict(optimizer={"foreach": False}),
        f"length buckets (pool of {BUCKET_POOL} batches)": dict(batches=bucketed),
        "torch.compile (dynamic shapes)": dict(compile=True),
    }
    chosen = args.levers.split(",") if args.levers else list(levers)
    result = {"environment": environment(args.device, MODULE, argv), "config": "tiny" if args.tiny else "paper",
              "steps": args.steps, "warmup": args.warmup,
              "padding_share_batch64": padding_share(64, training_batch),
              "padding_share_batch64_bucketed": padding_share(64, bucketed_batch), "levers": []}
    for name in chosen:
        lever = {**baseline, **levers[name]}
        torch.set_num_threads(lever["threads"])
        rows = measure(args.device, "fp32", args.steps, args.warmup, lever["batch_size"], arch, lever["optimizer"],
                       lever["batches"], lever["compile"], lever["accumulation"])
        torch.set_num_threads(threads)
        result["levers"].append({"lever": name, **{n: rows[n]["examples_per_second_overall"] for n in BACKENDS},
                                 "warmup_seconds": {n: rows[n]["warmup_seconds"] for n in BACKENDS}})
        print(f"{name:<40} " + "  ".join(f"{n} {rows[n]['examples_per_second_overall']:.1f} ex/s "
                                         f"(warmup {rows[n]['warmup_seconds']:.0f} s)" for n in BACKENDS), flush=True)
    print(f"padding share of source positions at batch 64: {result['padding_share_batch64']:.1%}, "
          f"bucketed: {result['padding_share_batch64_bucketed']:.1%}")
    name = args.name or f"training_levers_{'gpu' if args.device.startswith('cuda') else 'cpu'}" + ("_tiny" if args.tiny else "")
    save(name, result, args.out or RESULTS)


if __name__ == "__main__":
    main()
