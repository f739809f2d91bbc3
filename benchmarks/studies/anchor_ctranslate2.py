"""The serving anchor: CTranslate2 running the shipped Transformer's real weights, side by side
with our in-process torch path on the same questions, threads and batch sizes, in one run.

    python -m benchmarks.studies.anchor_ctranslate2 [--checkpoints checkpoints] [--questions 200] [--threads 1,2]
    python -m benchmarks.studies.anchor_ctranslate2 --device cuda      # anchor_ctranslate2_gpu.json

On a GPU the engine's paths are float32, float16 and int8 weights with float16 compute
(`int8_float16`), against our torch backends on the same GPU; the CPU's thread counts and GEMM
peak do not apply there, so one "thread count" (1) is recorded and no floor.

On the CPU each backend also runs in torch with int8 weights (`NAME_torch_int8`, models/runtimes/torch_int8.py,
the service's PLACEVALUE_RUNTIME=torch-int8), so the fastest path per backend is measured in the same run.

Also counts each backend's FLOPs per question (torch.utils.flop_counter) and probes this machine's
fp32 matrix-multiply peak, which together give the floor a pass could reach.

The conversion (models/runtimes/ctranslate2_engine.py) runs our weights unchanged. CTranslate2 cannot
express MemSizer, the Performer or MemoryFormer: only softmax attention has a spec, so only the
Transformer has an anchor.
"""
import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import STUDY_RESULTS, environment, flops_per_question, percentile, save, summary
from models import registry
from models.checkpoint import load_checkpoint
from models.runtimes.ctranslate2_engine import CTranslate2Runner, convert
from models.runtimes.torch_int8 import quantize_linear_layers
from models.task import generate
from models.tokenizer import MAX_ANSWER_CHARS, pad_batch

MODULE = "benchmarks.studies.anchor_ctranslate2"
# the suffix of a backend's torch int8 path (PLACEVALUE_RUNTIME=torch-int8) among the timed paths
TORCH_INT8 = "_torch_int8"


def ours(model, tokenizer, ids):
    device = next(model.parameters()).device
    with torch.inference_mode():
        rows = model.generate(pad_batch(ids).to(device), max_len=MAX_ANSWER_CHARS).tolist()
    return [tokenizer.decode(row) for row in rows]


def gemm_peak(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """fp32 matrix-multiply FLOP/s of this machine at `threads` threads (best of `repeats`)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 2):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def time_paths(paths: dict, questions_ids, batch_sizes, repeats: int) -> dict:
    """Single-question latency (paths alternating) and batched answers/s for each path."""
    single = {name: [] for name in paths}
    for i, ids in enumerate(questions_ids):
        for name in (list(paths) if i % 2 == 0 else list(paths)[::-1]):
            start = time.perf_counter()
            paths[name]([ids])
            single[name].append((time.perf_counter() - start) * 1e3)
    out = {name: {"single_ms": {**summary(single[name]), "p99": percentile(single[name], 0.99)}, "batched": {}}
           for name in paths}
    for size in batch_sizes:
        batch = (questions_ids * (size // len(questions_ids) + 1))[:size]
        for r in range(repeats):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                start = time.perf_counter()
                paths[name](batch)
                out[name]["batched"].setdefault(size, []).append(time.perf_counter() - start)
    for name in paths:
        out[name]["batched"] = {size: size / summary(times)["median"] for size, times in out[name]["batched"].items()}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints", help="every backend found here is timed beside the anchor")
    parser.add_argument("--questions", type=int, default=200, help="checked for agreement with the anchor")
    parser.add_argument("--timed", type=int, default=100, help="single questions timed per path and thread count")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch-sizes", default="5,8,32,64,128",
                        help="5 and 8: the passes 16 HTTP clients form on two workers (the pass-size ceiling)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    loaded = {}
    for name in registry.names():
        directory = Path(args.checkpoints) / name
        if (directory / "config.json").is_file():
            loaded[name] = load_checkpoint(directory)
    if "transformer" not in loaded:
        raise SystemExit(f"error: {args.checkpoints}/transformer holds no checkpoint: the anchor runs its weights")
    tokenizer = loaded["transformer"][1]
    pairs = generate("interpolate", args.questions, seed=9191)
    ids = [tokenizer.encode(q) for q, _ in pairs]
    truth = [a for _, a in pairs]
    torch.set_num_threads(1)
    flops = {name: flops_per_question(model, ids[:20]) for name, (model, _, _) in loaded.items()}
    if args.device == "cuda":
        for model, _, _ in loaded.values():
            model.to("cuda")
    # torch's int8 runs on the CPU only; a copy, so the float32 paths keep their weights
    quantized = ({} if args.device == "cuda" else
                 {name + TORCH_INT8: quantize_linear_layers(copy.deepcopy(model)) for name, (model, _, _) in loaded.items()})
    # CTranslate2 compute type -> the converted files it reads (int8 files, or float32 ones)
    compute_types = ({"float32": "float32", "float16": "float32", "int8_float16": "int8"} if args.device == "cuda"
                     else {"float32": "float32", "int8": "int8"})
    result = {"environment": environment(args.device, MODULE, argv), "checkpoints": str(args.checkpoints),
              "checkpoint_sha256": {n: c["weights"]["sha256"] for n, (_, _, c) in loaded.items()},
              "flops_per_question": flops, "gemm_peak_flops": {}, "threads": {},
              "cannot_express": [n for n in registry.names() if n != "transformer"]}
    print("GFLOP per question: " + ", ".join(f"{n} {f / 1e9:.2f}" for n, f in flops.items()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        transformer = loaded["transformer"][0]
        anchors = {kind: convert(transformer, Path(tmp) / kind, quantization=None if kind == "float32" else kind)
                   for kind in ("float32", "int8")}
        agreement = {"questions": len(ids)}
        for threads in ([1] if args.device == "cuda" else map(int, args.threads.split(","))):
            if args.device == "cpu":
                result["gemm_peak_flops"][threads] = gemm_peak(threads)
            torch.set_num_threads(threads)
            translators = {kind: CTranslate2Runner(anchors[files], tokenizer, threads, compute_type=kind,
                                                   device=args.device)
                           for kind, files in compute_types.items()}
            if len(agreement) == 1:  # answers once, at the first thread count
                for name, (model, _, _) in loaded.items():
                    answers = ours(model, tokenizer, ids)
                    agreement[f"{name}_correct"] = sum(a == t for a, t in zip(answers, truth))
                    if name + TORCH_INT8 in quantized:
                        int8 = ours(quantized[name + TORCH_INT8], tokenizer, ids)
                        agreement[f"{name}{TORCH_INT8}_correct"] = sum(a == t for a, t in zip(int8, truth))
                        agreement[f"{name}{TORCH_INT8}_same_as_{name}"] = sum(a == b for a, b in zip(int8, answers))
                reference = ours(transformer, tokenizer, ids)
                for kind, translator in translators.items():
                    got = translator.answer_ids(ids)
                    agreement[f"ctranslate2_{kind}_correct"] = sum(g == t for g, t in zip(got, truth))
                    agreement[f"ctranslate2_{kind}_same_as_transformer"] = sum(g == r for g, r in zip(got, reference))
                print(agreement, flush=True)
            paths = {**{name: (lambda batch, m=model: ours(m, tokenizer, batch)) for name, (model, _, _) in loaded.items()},
                     **{name: (lambda batch, m=model: ours(m, tokenizer, batch)) for name, model in quantized.items()},
                     **{f"ctranslate2_{kind}": t.answer_ids for kind, t in translators.items()}}
            timed = time_paths(paths, ids[:args.timed], list(map(int, args.batch_sizes.split(","))), args.repeats)
            result["threads"][threads] = timed
            if threads in result["gemm_peak_flops"]:
                print(f"{threads} threads: fp32 GEMM peak {result['gemm_peak_flops'][threads] / 1e9:.1f} GFLOP/s",
                      flush=True)
            for name, row in timed.items():
                batched = ", ".join(f"b{b} {v:.0f}/s" for b, v in row["batched"].items())
                print(f"{threads} threads {name:<22} single p50 {row['single_ms']['median']:.1f} ms; {batched}",
                      flush=True)
        result["agreement"] = agreement
    save("anchor_ctranslate2_gpu" if args.device == "cuda" else "anchor_ctranslate2_cpu", result, args.out or STUDY_RESULTS)


if __name__ == "__main__":
    main()
