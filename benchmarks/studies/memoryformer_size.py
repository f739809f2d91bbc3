"""MemoryFormer's cost against tau and width, beside the Transformer at the same width: parameters,
4-bit storage, FLOPs per question (counted, table lookups included) and single-question CPU
latency, all on random weights (these do not depend on training).

    python -m benchmarks.studies.memoryformer_size [--configs 512:2,512:4,512:8,256:4,256:8,128:4,128:8]

A memory layer holds (d / tau) * 2^tau * h values: 2^tau / tau times a Linear's, while its
arithmetic is (d / tau) * h multiply-adds, tau times fewer. Whether the checkpoint fits the
repository's budget is reported against BUDGET_BYTES minus what the shipped backends use.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import STUDY_RESULTS, environment, flops_per_question, save, summary
from models.checkpoint import load_checkpoint
from models.config import ModelConfig
from models.memoryformer import bucket_entropy
from models.seq2seq import Seq2Seq
from models.task import generate
from models.tokenizer import MAX_ANSWER_CHARS, Tokenizer, pad_batch
from training.train import make_batch

MODULE = "benchmarks.studies.memoryformer_size"
BUDGET_BYTES = 60 * 2 ** 20  # the tracked tree, every shipped checkpoint included
GROUP = 64  # models/checkpoint.py's 4-bit group size: 0.5 byte per value + fp16 scale and minimum per group


def int4_bytes(model) -> int:
    """Bytes of the weights stored as 4-bit groups (matrices) and float32 (vectors)."""
    total = 0
    for p in model.parameters():
        total += p.numel() // 2 + (p.numel() // GROUP) * 4 if p.dim() == 2 else p.numel() * 4
    return total


def config_for(backend: str, d: int, tau: int | None, vocab: int) -> ModelConfig:
    settings = {"tau": tau} if backend == "memoryformer" else None
    return ModelConfig(backend=backend, vocab_size=vocab, d_model=d, d_ff=4 * d, n_heads=8 if d >= 256 else 4,
                       settings=settings)


def measure(config: ModelConfig, ids, latency_questions: int) -> dict:
    with torch.device("meta"):
        shape_only = Seq2Seq(config)
    row = {"parameters": shape_only.num_parameters(), "int4_bytes": int4_bytes(shape_only)}
    torch.manual_seed(0)
    model = Seq2Seq(config).eval()
    row["gflop_per_question"] = flops_per_question(model, ids) / 1e9
    times = []
    with torch.inference_mode():
        model.generate(pad_batch(ids[:1]), max_len=MAX_ANSWER_CHARS)  # warm-up
        for question in ids[:latency_questions]:
            start = time.perf_counter()
            model.generate(pad_batch([question]), max_len=MAX_ANSWER_CHARS)
            times.append((time.perf_counter() - start) * 1e3)
    row["single_ms"] = summary(times)
    return row


def trained_bucket_entropy(directory, questions: int) -> dict:
    """How evenly a trained checkpoint's hashes spread real questions over each chunk's 2^tau
    rows: entropy in bits per memory layer (tau = every row used equally, 0 = one row), over one
    teacher-forced pass of fresh interpolate questions."""
    model, tokenizer, config = load_checkpoint(directory)
    examples = generate("interpolate", questions, seed=6061)
    src, tgt_in, _ = make_batch(examples, tokenizer, "cpu")
    with torch.inference_mode():
        per_layer = bucket_entropy(model, src, tgt_in)
    return {"checkpoint": str(directory), "weights_sha256": config["weights"]["sha256"],
            "tau": config["architecture"]["settings"]["tau"], "questions": questions, "per_layer": per_layer,
            "mean": statistics.mean(per_layer.values()), "min": min(per_layer.values())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="512:2,512:4,512:8,256:4,256:8,128:4,128:8", help="d_model:tau pairs")
    parser.add_argument("--questions", type=int, default=10, help="questions for FLOPs and latency")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoints", default="checkpoints", help="the shipped ones, for the budget left")
    parser.add_argument("--out", default=None)
    parser.add_argument("--entropy-only", action="store_true",
                        help="only (re)measure the shipped checkpoint's bucket usage, into the existing result")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trained = Path(args.checkpoints) / "memoryformer"
    entropy = trained_bucket_entropy(trained, 1000) if (trained / "config.json").exists() else None
    if entropy:
        print(f"trained bucket entropy (tau {entropy['tau']}): mean {entropy['mean']:.2f} bits, "
              f"min {entropy['min']:.2f} over {len(entropy['per_layer'])} memory layers", flush=True)
    if args.entropy_only:
        path = Path(args.out or STUDY_RESULTS) / "memoryformer_size_cpu.json"
        result = json.loads(path.read_text())
        result["trained_bucket_entropy"] = entropy
        save("memoryformer_size_cpu", result, args.out or STUDY_RESULTS)
        return
    tokenizer = Tokenizer()
    ids = [tokenizer.encode(q) for q, _ in generate("interpolate", args.questions, seed=6060)]
    # what the other backends' shipped weights leave for a MemoryFormer checkpoint
    shipped = sum(f.stat().st_size for f in Path(args.checkpoints).glob("*/model.safetensors")
                  if f.parent.name != "memoryformer")
    result = {"environment": environment("cpu", MODULE, argv), "budget_bytes": BUDGET_BYTES,
              "shipped_weights_bytes": shipped, "rows": [], "trained_bucket_entropy": entropy}
    widths = []
    for spec in args.configs.split(","):
        d, tau = map(int, spec.split(":"))
        row = {"backend": "memoryformer", "d_model": d, "tau": tau,
               **measure(config_for("memoryformer", d, tau, tokenizer.vocab_size), ids, args.questions)}
        row["fits_budget"] = row["int4_bytes"] <= BUDGET_BYTES - shipped - 2 * 2 ** 20  # code and docs: ~2 MiB
        result["rows"].append(row)
        print(f"memoryformer d {d} tau {tau}: {row['parameters'] / 1e6:.1f}M params, int4 {row['int4_bytes'] / 1e6:.1f} MB, "
              f"{row['gflop_per_question']:.3f} GFLOP/question, p50 {row['single_ms']['median']:.1f} ms", flush=True)
        if d not in widths:
            widths.append(d)
    for d in widths:
        row = {"backend": "transformer", "d_model": d, "tau": None,
               **measure(config_for("transformer", d, None, tokenizer.vocab_size), ids, args.questions)}
        result["rows"].append(row)
        print(f"transformer d {d}: {row['parameters'] / 1e6:.1f}M params, {row['gflop_per_question']:.3f} GFLOP/question, "
              f"p50 {row['single_ms']['median']:.1f} ms", flush=True)
    save("memoryformer_size_cpu", result, args.out or STUDY_RESULTS)


if __name__ == "__main__":
    main()
