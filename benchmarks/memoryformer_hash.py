"""MemoryFormer's hashing, the first formulation against the current one, side by side on the shipped
checkpoint: greedy passes timed at several batch sizes (formulations alternating, one process), and the
answers of both compared one by one on fresh questions.

    python -m benchmarks.memoryformer_hash [--checkpoints checkpoints] [--threads 1] [--questions 2000]

The first formulation (until 2026-11-24) made the code powers and row offsets on every call, summed
integer products for the codes and took the weights as exp(sum of log-sigmoids). The current one
(`models.memoryformer.hash_input`) keeps the constants as buffers, takes the codes as one float32
product with the powers of two and the weights as a direct product of sigmoids. The codes are equal
by construction; the weights differ by float rounding (~1e-7 relative), which could flip a later
sign code: the answer comparison says whether it changes any answer.
"""
import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, environment, save
from models.checkpoint import load_checkpoint
from models.memoryformer import HashedInput, MemoryLayer
from models.task import generate
from models.tokenizer import MAX_ANSWER_CHARS, pad_batch

MODULE = "benchmarks.memoryformer_hash"
SEED = 4343  # fresh questions, not the stored evaluation sets


def first_hash(layer: MemoryLayer, x: torch.Tensor) -> HashedInput:
    """The first formulation of MemoryLayer.hash, kept here as the baseline."""
    *lead, d = x.shape
    chunks, tau = d // layer.tau, layer.tau
    z = x.reshape(-1, chunks, tau)
    powers = 2 ** torch.arange(tau - 1, -1, -1, device=x.device)
    codes = ((z >= 0).long() * powers).sum(-1)
    weights = F.logsigmoid(2 * z.abs()).sum(-1).exp()
    if layer.weighting == "official":
        weights = z.abs().sum(-1) * weights
    offsets = torch.arange(chunks, device=x.device) * (2 ** tau)
    return HashedInput(codes + offsets, weights, tuple(lead))


@contextmanager
def first_hashing(model: torch.nn.Module):
    """Every memory layer of `model` hashes with the first formulation inside the block."""
    layers = [m for m in model.modules() if isinstance(m, MemoryLayer)]
    for layer in layers:
        layer.hash = first_hash.__get__(layer)  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        for layer in layers:
            del layer.hash


def answers(model, tokenizer, questions: list[str], batch: int = 256) -> list[str]:
    out = []
    for i in range(0, len(questions), batch):
        src = pad_batch([tokenizer.encode(q) for q in questions[i:i + batch]])
        out += [tokenizer.decode(row) for row in model.generate(src, max_len=MAX_ANSWER_CHARS).tolist()]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one server worker's)")
    parser.add_argument("--batch-sizes", default="1,5,8,32,128")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per batch size and formulation")
    parser.add_argument("--questions", type=int, default=2000, help="fresh questions whose answers are compared")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_checkpoint(f"{args.checkpoints}/memoryformer")
    data = generate("interpolate", args.questions, seed=SEED)
    questions = [q for q, _ in data]
    result = {"environment": environment("cpu", MODULE, argv), "threads": args.threads, "batches": {}}
    with torch.inference_mode():
        current = answers(model, tokenizer, questions)
        with first_hashing(model):
            first = answers(model, tokenizer, questions)
        result["answers"] = {"questions": len(data), "differing": sum(a != b for a, b in zip(first, current)),
                             "correct_first": sum(a == t for a, (_, t) in zip(first, data)),
                             "correct_current": sum(a == t for a, (_, t) in zip(current, data))}
        for size in map(int, args.batch_sizes.split(",")):
            src = pad_batch([tokenizer.encode(q) for q in (questions * size)[:size]])
            times = {"first": [], "current": []}
            for _ in range(2):  # warm both
                model.generate(src, max_len=MAX_ANSWER_CHARS)
                with first_hashing(model):
                    model.generate(src, max_len=MAX_ANSWER_CHARS)
            deadline = time.monotonic() + 2 * args.seconds
            while time.monotonic() < deadline or len(times["first"]) < 3:
                for name in (("first", "current") if len(times["first"]) % 2 == 0 else ("current", "first")):
                    with first_hashing(model) if name == "first" else nullcontext():
                        start = time.perf_counter()
                        model.generate(src, max_len=MAX_ANSWER_CHARS)
                        times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(t) for name, t in times.items()}
            result["batches"][size] = {"passes": len(times["first"]),
                                       **{f"{name}_ms": m * 1e3 for name, m in medians.items()},
                                       **{f"{name}_answers_per_second": size / m for name, m in medians.items()},
                                       "current_over_first": medians["current"] / medians["first"]}
            row = result["batches"][size]
            print(f"batch {size:4d}: first {row['first_ms']:.1f} ms, current {row['current_ms']:.1f} ms, "
                  f"ratio {row['current_over_first']:.2f} ({row['passes']} passes each)", flush=True)
    print(f"answers differing on {result['answers']['differing']} of {len(data)} questions")
    save("memoryformer_hash_cpu", result, args.out or RESULTS)


if __name__ == "__main__":
    main()
