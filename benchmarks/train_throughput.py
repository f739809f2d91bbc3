"""Training throughput of every backend side by side (backends alternate step by step, real data
pipeline): step time and examples/s per precision, or, with --levers, each throughput lever changed
on its own against the fp32 batch-64 baseline.

    python -m benchmarks.train_throughput [--device cpu|cuda] [--steps 12] [--precisions fp32,bf16] [--tiny]
    python -m benchmarks.train_throughput --levers all [--steps 8]      # -> training_levers_<device>.json

bf16 autocast is far slower on CPUs without AMX: measure it with --precisions, not as a lever.
Bucketing (`training.train --bucket-pool`) can save at most the share of padding in the encoder's
input, printed with and without it. torch.compile's compilation time is the warmup column.
"""
import argparse
import time

import torch

from benchmarks.common import RESULTS, TINY_ARCH, environment, save, summary, sync
from models import registry
from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.tokenizer import PAD, Tokenizer
from training.data import bucketed_batch, training_batch
from training.train import make_batch

MODULE = "benchmarks.train_throughput"
BUCKET_POOL = 8


def measure(device, precision, steps, warmup, batch_size, arch, optimizer_options=None, batches=training_batch,
            compile=False, accumulation=1) -> dict:
    """Median step time per backend; `optimizer_options` override AdamW's implementation flags,
    `batches(seed, rank, index, batch_size)` replaces the training stream, `compile` wraps the
    model in torch.compile (its compilation falls in the warmup steps, timed separately), and a
    step sums the gradients of `accumulation` micro-batches of `batch_size` before the update."""
    names, tokenizer = registry.names(), Tokenizer()
    options = optimizer_options if optimizer_options is not None else {"fused": device.startswith("cuda")}
    models, forwards, optimizers = {}, {}, {}
    for name in names:
        torch.manual_seed(0)
        models[name] = Seq2Seq(ModelConfig(backend=name, **arch)).to(device).train()
        forwards[name] = torch.compile(models[name], dynamic=True) if compile else models[name]
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4, **options)
    step_times, data_times = {n: [] for n in names}, {n: [] for n in names}
    warmup_seconds = dict.fromkeys(names, 0.0)
    for i in range(warmup + steps):
        for name in (names if i % 2 == 0 else names[::-1]):  # alternate who goes first
            start, generating = time.perf_counter(), 0.0
            optimizers[name].zero_grad(set_to_none=True)
            for micro in range(accumulation):
                before = time.perf_counter()
                src, tgt_in, tgt_out = make_batch(batches(0, 0, i * accumulation + micro, batch_size), tokenizer, device)
                generating += time.perf_counter() - before
                with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"):
                    _, loss = forwards[name](src, tgt_in, tgt_out)
                (loss / accumulation).backward()
            optimizers[name].step()
            sync(device)
            if i >= warmup:
                step_times[name].append(time.perf_counter() - start)
                data_times[name].append(generating)
            else:
                warmup_seconds[name] += time.perf_counter() - start
    rows, examples = {}, batch_size * accumulation
    for name in names:
        s = summary(step_times[name])
        rows[name] = {"step_seconds": s, "examples_per_second": examples / s["median"],
                      # over all timed steps: the fair figure when batch shapes vary by design (bucketing)
                      "examples_per_second_overall": examples * steps / sum(step_times[name]),
                      "data_share": sum(data_times[name]) / sum(step_times[name]),
                      "warmup_seconds": warmup_seconds[name],
                      "step_time_vs_baseline": s["median"] / summary(step_times[names[0]])["median"]}
    return rows


def padding_share(batch_size: int, stream, batches: int = 200) -> float:
    """Fraction of source positions that are padding in `stream(seed, rank, index, batch_size)`."""
    tokenizer, pad, total = Tokenizer(), 0, 0
    for i in range(batches):
        src, _, _ = make_batch(stream(0, 0, i, batch_size), tokenizer, "cpu")
        pad += int((src == PAD).sum())
        total += src.numel()
    return pad / total


def levers(args, threads: int) -> dict:
    """name -> measure() options; every lever trains on the same examples in its timed steps: one
    whole bucketing pool (indices BUCKET_POOL..2*BUCKET_POOL-1 of the stream), after the warmup."""
    def plain(seed, rank, index, size):
        return training_batch(seed, rank, index + BUCKET_POOL - args.warmup, size)

    def bucketed(seed, rank, index, size):
        return bucketed_batch(seed, rank, index + BUCKET_POOL - args.warmup, size, pool=BUCKET_POOL)

    baseline = dict(batch_size=64, threads=threads, optimizer_options={"fused": args.device.startswith("cuda")},
                    batches=plain)
    changes = {
        "baseline: fp32 batch 64": {},
        "batch 128": dict(batch_size=128),
        "batch 256": dict(batch_size=256),
        "batch 256 as 4 x 64 accumulated": dict(accumulation=4),  # batch 256's update at batch 64's memory
        f"{max(1, threads // 2)} torch thread(s)": dict(threads=max(1, threads // 2)),
        "AdamW fused": dict(optimizer_options={"fused": True}),
        "AdamW for-loop (foreach off)": dict(optimizer_options={"foreach": False}),
        f"length buckets (pool of {BUCKET_POOL} batches)": dict(batches=bucketed),
        "torch.compile (dynamic shapes)": dict(compile=True),
    }
    return {name: {**baseline, **change} for name, change in changes.items()}


def lever_study(args, arch) -> dict:
    threads = torch.get_num_threads()
    table = levers(args, threads)
    chosen = list(table) if args.levers == "all" else args.levers.split(",")
    unknown = [name for name in chosen if name not in table]
    if unknown:
        raise SystemExit(f"unknown levers {unknown}; choose from {list(table)}")
    result = {"environment": environment(args.device, MODULE, args.argv), "config": "tiny" if args.tiny else "paper",
              "steps": args.steps, "warmup": args.warmup,
              "padding_share_batch64": padding_share(64, training_batch),
              "padding_share_batch64_bucketed": padding_share(64, bucketed_batch), "levers": []}
    for name in chosen:
        options = dict(table[name])
        torch.set_num_threads(options.pop("threads"))
        rows = measure(args.device, "fp32", args.steps, args.warmup, arch=arch, **options)
        torch.set_num_threads(threads)
        result["levers"].append({"lever": name, **{n: rows[n]["examples_per_second_overall"] for n in rows},
                                 "warmup_seconds": {n: rows[n]["warmup_seconds"] for n in rows}})
        print(f"{name:<40} " + "  ".join(f"{n} {rows[n]['examples_per_second_overall']:.1f} ex/s "
                                         f"(warmup {rows[n]['warmup_seconds']:.0f} s)" for n in rows), flush=True)
    print(f"padding share of source positions at batch 64: {result['padding_share_batch64']:.1%}, "
          f"bucketed: {result['padding_share_batch64_bucketed']:.1%}")
    return result


def precision_study(args, arch) -> dict:
    result = {"environment": environment(args.device, MODULE, args.argv), "batch_size": args.batch_size,
              "steps": args.steps, "config": "tiny" if args.tiny else "paper", "precisions": {}}
    for precision in args.precisions.split(","):
        rows = measure(args.device, precision, args.steps, args.warmup, args.batch_size, arch)
        result["precisions"][precision] = rows
        print(f"{precision}: " + ", ".join(f"{n} {r['step_seconds']['median'] * 1e3:.1f} ms/step "
                                          f"({r['examples_per_second']:.0f} ex/s, data {r['data_share']:.1%}, "
                                          f"{r['step_time_vs_baseline']:.2f}x the first's step time)"
                                          for n, r in rows.items()))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--levers", default=None, help='"all" or comma-separated lever names: the lever study')
    parser.add_argument("--tiny", action="store_true", help="a tiny model, to smoke-test the script")
    parser.add_argument("--name", default=None, help="result file name (default <study>_<device>[_tiny])")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    args.argv = argv
    arch = TINY_ARCH if args.tiny else {}
    result = lever_study(args, arch) if args.levers else precision_study(args, arch)
    study = "training_levers" if args.levers else "train_throughput"
    name = args.name or f"{study}_{'gpu' if args.device.startswith('cuda') else 'cpu'}" + ("_tiny" if args.tiny else "")
    print(f"wrote {save(name, result, args.out or RESULTS)}")


if __name__ == "__main__":
    main()
