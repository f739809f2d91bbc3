"""Rewritten kernels against their first formulations, side by side on the shipped checkpoints: greedy
passes timed at several batch sizes (the two formulations alternating in one process), and the answers
of both compared one by one on fresh questions.

    python -m benchmarks.studies.formulations [--checkpoints checkpoints] [--threads 1] [--questions 2000]

- MemoryFormer's hash. First (the original): the code powers and row offsets made on every call,
  codes as summed integer products, weights as exp(sum of log-sigmoids). Current
  (`models.memoryformer.hash_input`): constants kept as buffers, codes as one float32 product with the
  powers of two, weights as a direct product of sigmoids.
- The Performer's feature maps. First: the exponent w.x - |x|^2/2 formed in full, then the stabiliser
  subtracted, exp taken, 1/sqrt(m) multiplied and padding masked, each a pass over the (.., T, m)
  features. Current (`models.performer.positive_features`, `PerformerAttention.source_sums`): the
  per-row constants gathered into one (.., T, 1) offset, +inf at padding.

Both are the same functions up to float rounding (~1e-7 relative), which could flip a later decision
(a MemoryFormer sign code, an argmax): the answer comparison says whether it changed any answer.
"""
import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from benchmarks.common import STUDY_RESULTS, environment, save
from models import performer
from models.checkpoint import load_checkpoint
from models.memoryformer import HashedInput, MemoryLayer
from models.task import generate
from models.tokenizer import MAX_ANSWER_CHARS, pad_batch

MODULE = "benchmarks.studies.formulations"
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


def first_exponents(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    return x @ projection.T - (x * x).sum(dim=-1, keepdim=True) / 2


def first_positive_features(x: torch.Tensor, projection: torch.Tensor, stabiliser=None) -> torch.Tensor:
    """The first formulation of performer.positive_features."""
    exponent = first_exponents(x, projection)
    if stabiliser is None:
        stabiliser = exponent.amax(dim=-1, keepdim=True).detach()
    return torch.exp(exponent - stabiliser) * projection.shape[0] ** -0.5


def first_source_sums(attention: performer.PerformerAttention, k, v, pad):
    """The first formulation of PerformerAttention.source_sums."""
    exponent = first_exponents(k, attention.projection)
    valid = ~pad[:, None, :, None]
    stabiliser = exponent.masked_fill(~valid, float("-inf")).amax(dim=(2, 3), keepdim=True).detach()
    kf = (torch.exp(exponent - stabiliser) * attention.features ** -0.5).masked_fill(~valid, 0.0)
    return kf.transpose(-1, -2) @ v, kf.sum(dim=2)


@contextmanager
def first_formulation(model: torch.nn.Module):
    """Inside the block, `model` computes with the first formulations (instance attributes shadow the
    classes' methods; the Performer's module-level feature map is swapped and restored)."""
    patched = []
    for module in model.modules():
        if isinstance(module, MemoryLayer):
            module.hash = first_hash.__get__(module)
            patched.append((module, "hash"))
        elif isinstance(module, performer.PerformerAttention):
            module.source_sums = first_source_sums.__get__(module)
            patched.append((module, "source_sums"))
    current_features = performer.positive_features
    performer.positive_features = first_positive_features
    try:
        yield
    finally:
        performer.positive_features = current_features
        for module, name in patched:
            delattr(module, name)


def answers(model, tokenizer, questions: list[str], batch: int = 256) -> list[str]:
    out = []
    for i in range(0, len(questions), batch):
        src = pad_batch([tokenizer.encode(q) for q in questions[i:i + batch]])
        out += [tokenizer.decode(row) for row in model.generate(src, max_len=MAX_ANSWER_CHARS).tolist()]
    return out


def compare(model, tokenizer, data, batch_sizes, seconds: float) -> dict:
    """Answers of both formulations compared, then each batch size timed, formulations alternating."""
    questions = [q for q, _ in data]
    current = answers(model, tokenizer, questions)
    with first_formulation(model):
        first = answers(model, tokenizer, questions)
    result = {"answers": {"questions": len(data), "differing": sum(a != b for a, b in zip(first, current)),
                         "correct_first": sum(a == t for a, (_, t) in zip(first, data)),
                         "correct_current": sum(a == t for a, (_, t) in zip(current, data))},
              "batches": {}}
    for size in batch_sizes:
        src = pad_batch([tokenizer.encode(q) for q in (questions * size)[:size]])
        times = {"first": [], "current": []}
        for name in ("first", "current"):  # warm both
            with first_formulation(model) if name == "first" else nullcontext():
                model.generate(src, max_len=MAX_ANSWER_CHARS)
        deadline = time.monotonic() + 2 * seconds
        while time.monotonic() < deadline or len(times["first"]) < 3:
            for name in (("first", "current") if len(times["first"]) % 2 == 0 else ("current", "first")):
                with first_formulation(model) if name == "first" else nullcontext():
                    start = time.perf_counter()
                    model.generate(src, max_len=MAX_ANSWER_CHARS)
                    times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) for name, t in times.items()}
        result["batches"][size] = {"passes": len(times["first"]),
                                   **{f"{name}_ms": m * 1e3 for name, m in medians.items()},
                                   **{f"{name}_answers_per_second": size / m for name, m in medians.items()},
                                   "current_over_first": medians["current"] / medians["first"]}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--backends", default="memoryformer,performer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one server worker's)")
    parser.add_argument("--batch-sizes", default="1,5,8,32,128")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per batch size and formulation")
    parser.add_argument("--questions", type=int, default=2000, help="fresh questions whose answers are compared")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = generate("interpolate", args.questions, seed=SEED)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    result = {"environment": environment("cpu", MODULE, argv), "threads": args.threads, "backends": {}}
    for name in args.backends.split(","):
        model, tokenizer, _ = load_checkpoint(f"{args.checkpoints}/{name}")
        with torch.inference_mode():
            row = result["backends"][name] = compare(model, tokenizer, data, sizes, args.seconds)
        for size, timing in row["batches"].items():
            print(f"{name} batch {size:4d}: first {timing['first_ms']:.1f} ms, current {timing['current_ms']:.1f} "
                  f"ms, ratio {timing['current_over_first']:.2f} ({timing['passes']} passes each)", flush=True)
        print(f"{name}: answers differ on {row['answers']['differing']} of {len(data)} questions", flush=True)
    save("formulations_cpu", result, args.out or STUDY_RESULTS)


if __name__ == "__main__":
    main()
