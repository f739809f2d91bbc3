"""Training throughput, Transformer vs MemSizer side by side: step time and examples/s at one batch
size, fp32 and bf16 autocast, with the real data pipeline; backends alternate step by step.

    python -m benchmarks.train_throughput [--device cpu|cuda] [--steps 12] [--tiny]
"""
import argparse
import time

import torch

from benchmarks.common import RESULTS, TINY_ARCH, environment, save, summary, sync
from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.tokenizer import Tokenizer
from training.data import training_batch
from training.train import make_batch

BACKENDS = ("transformer", "memsizer")

MODULE = "benchmarks.train_throughput"


def measure(device, precision, steps, warmup, batch_size, arch, optimizer_options=None, batches=training_batch,
            compile=False, accumulation=1) -> dict:
    """Median step time per backend; `optimizer_options` override AdamW's implementation flags,
    `batches(seed, rank, index, batch_size)` replaces the training stream, `compile` wraps the
    model in torch.compile (its compilation falls in the warmup steps, timed separately), and a
    step sums the gradients of `accumulation` micro-batches of `batch_size` before the update."""
    tokenizer = Tokenizer()
    options = optimizer_options if optimizer_options is not None else {"fused": device.startswith("cuda")}
    models, forwards, optimizers = {}, {}, {}
    for name in BACKENDS:
        torch.manual_seed(0)
        models[name] = Seq2Seq(ModelConfig(attention=name, **arch)).to(device).train()
        forwards[name] = torch.compile(models[name], dynamic=True) if compile else models[name]
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4, **options)
    step_times = {n: [] for n in BACKENDS}
    data_times = {n: [] for n in BACKENDS}
    warmup_seconds = {n: 0.0 for n in BACKENDS}
    for i in range(warmup + steps):
        order = BACKENDS if i % 2 == 0 else BACKENDS[::-1]  # alternate who goes first
        for name in order:
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
    rows = {}
    for name in BACKENDS:
        s = summary(step_times[name])
        examples = batch_size * accumulation
        rows[name] = {"step_seconds": s, "examples_per_second": examples / s["median"],
                      # over all timed steps: the fair figure when batch shapes vary by design (bucketing)
                      "examples_per_second_overall": examples * steps / sum(step_times[name]),
                      "data_share": sum(data_times[name]) / sum(step_times[name]),
                      "warmup_seconds": warmup_seconds[name]}
    rows["memsizer_over_transformer_step_time"] = (rows["memsizer"]["step_seconds"]["median"]
                                                   / rows["transformer"]["step_seconds"]["median"])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, to smoke-test the script")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    arch = TINY_ARCH if args.tiny else {}
    result = {"environment": environment(args.device, MODULE, argv), "batch_size": args.batch_size, "steps": args.steps,
              "config": "tiny" if args.tiny else "paper", "precisions": {}}
    for precision in args.precisions.split(","):
        rows = measure(args.device, precision, args.steps, args.warmup, args.batch_size, arch)
        result["precisions"][precision] = rows
        print(f"{precision}: " + ", ".join(f"{n} {rows[n]['step_seconds']['median'] * 1e3:.1f} ms/step "
                                          f"({rows[n]['examples_per_second']:.0f} ex/s, data {rows[n]['data_share']:.1%})"
                                          for n in BACKENDS)
              + f"; memsizer/transformer step time {rows['memsizer_over_transformer_step_time']:.2f}")
    device_kind = "gpu" if args.device.startswith("cuda") else "cpu"
    path = save(f"train_throughput_{device_kind}" + ("_tiny" if args.tiny else ""), result, args.out or RESULTS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
