"""Training-throughput levers, each changed on its own against the fp32 baseline (batch 64),
both backends alternating within each measurement.

    python -m benchmarks.training_levers [--device cpu] [--steps 3] [--tiny]

bf16 autocast is measured by benchmarks.train_throughput (minutes per step on CPUs without
AMX). Bucketing is bounded here by the share of padding in real batches: it can save at most
that share of the encoder's work.
"""
import argparse

import torch

from benchmarks.common import RESULTS, TINY_ARCH, environment, save
from benchmarks.train_throughput import BACKENDS, measure
from models.tokenizer import PAD, Tokenizer
from training.data import training_batch
from training.train import make_batch

MODULE = "benchmarks.training_levers"


def padding_share(batch_size: int, batches: int = 200) -> float:
    """Fraction of source positions that are padding in generated training batches."""
    tokenizer, pad, total = Tokenizer(), 0, 0
    for i in range(batches):
        src, _, _ = make_batch(training_batch(0, 0, i, batch_size), tokenizer, "cpu")
        pad += int((src == PAD).sum())
        total += src.numel()
    return pad / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    arch = TINY_ARCH if args.tiny else {}
    threads = torch.get_num_threads()
    default_opt = {"fused": args.device.startswith("cuda")}
    levers = [  # (name, batch size, torch threads, AdamW flags)
        ("baseline fp32, batch 64", 64, threads, default_opt),
        ("batch 128", 128, threads, default_opt),
        ("batch 256", 256, threads, default_opt),
        (f"{max(1, threads // 2)} torch thread(s)", 64, max(1, threads // 2), default_opt),
        ("AdamW fused", 64, threads, {"fused": True}),
        ("AdamW for-loop (foreach off)", 64, threads, {"foreach": False}),
    ]
    result = {"environment": environment(args.device, MODULE, argv), "config": "tiny" if args.tiny else "paper",
              "padding_share_batch64": padding_share(64), "levers": []}
    for name, batch_size, n_threads, options in levers:
        torch.set_num_threads(n_threads)
        rows = measure(args.device, "fp32", args.steps, args.warmup, batch_size, arch, options)
        torch.set_num_threads(threads)
        result["levers"].append({"lever": name, **{n: rows[n]["examples_per_second"] for n in BACKENDS}})
        print(f"{name:<30} " + "  ".join(f"{n} {rows[n]['examples_per_second']:.1f} ex/s" for n in BACKENDS), flush=True)
    print(f"padding share of source positions at batch 64: {result['padding_share_batch64']:.1%}")
    save(f"training_levers_{'gpu' if args.device.startswith('cuda') else 'cpu'}" + ("_tiny" if args.tiny else ""),
         result, args.out or RESULTS)


if __name__ == "__main__":
    main()
