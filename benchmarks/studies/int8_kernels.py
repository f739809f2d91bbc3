"""Where CTranslate2's int8 changes the shipped Transformer's answers: the rounding or the kernel?

    python -m benchmarks.studies.int8_kernels [--checkpoints checkpoints] [--questions 1000] [--threads 2]

The same int8 model (per-row int8 weights, CTranslate2's converter) is run by CTranslate2 with its
default GEMM backend on this machine and with Intel MKL's (CT2_USE_MKL=1; the engine picks its
backend when it is imported, so each runs in a child process), in float32 too, on the same fresh
interpolate questions: accuracy and answers/s at batch 64. Beside them, the int8 rounding alone,
emulated in torch: every linear layer's weights and inputs rounded per row to 127 steps of the
row's largest magnitude (CTranslate2's scheme), the products summed in float32. If the emulation
keeps the answers and one backend's kernel does not, the kernel's own arithmetic changes them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import STUDY_RESULTS, environment, save
from models.checkpoint import load_checkpoint
from models.task import generate
from models.tokenizer import MAX_ANSWER_CHARS, pad_batch

MODULE = "benchmarks.studies.int8_kernels"
ROOT = Path(__file__).resolve().parents[2]
BACKENDS = {"default": "0", "mkl": "1"}  # CT2_USE_MKL for each
BATCH = 64
SEED = 4242  # fresh questions, not the stored evaluation sets


def questions(count: int) -> list[tuple[str, str]]:
    return generate("interpolate", count, seed=SEED)


def engine_child(checkpoint: str, count: int, threads: int, compute_types: list[str]) -> dict:
    """In this process (CT2_USE_MKL already set): accuracy and answers/s per compute type."""
    import ctranslate2
    from models.runtimes.ctranslate2_engine import CTranslate2Runner, convert
    model, tokenizer, _ = load_checkpoint(checkpoint)
    data = questions(count)
    ids = [tokenizer.encode(q) for q, _ in data]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for compute_type in compute_types:
            directory = convert(model, Path(tmp) / compute_type,
                                quantization=None if compute_type == "float32" else compute_type)
            runner = CTranslate2Runner(directory, tokenizer, threads, compute_type)
            runner.answer_ids(ids[:BATCH])  # warm
            start = time.perf_counter()
            answers = [a for i in range(0, len(ids), BATCH) for a in runner.answer_ids(ids[i:i + BATCH])]
            seconds = time.perf_counter() - start
            rows[compute_type] = {"accuracy": sum(a == b for a, (_, b) in zip(answers, data)) / len(data),
                                  "answers_per_second": len(data) / seconds}
    return {"supported": sorted(ctranslate2.get_supported_compute_types("cpu")), "rows": rows}


def engine_rows(checkpoints: str, count: int, threads: int) -> dict:
    """Each GEMM backend in a child process of its own (the checkpoints directory passed on)."""
    out = {}
    for backend, use_mkl in BACKENDS.items():
        env = dict(os.environ, CT2_USE_MKL=use_mkl)
        child = subprocess.run([sys.executable, "-m", MODULE, "--child", "--checkpoints", checkpoints,
                                "--questions", str(count), "--threads", str(threads)],
                               env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        out[backend] = json.loads(child.stdout.strip().splitlines()[-1])
        for compute_type, row in out[backend]["rows"].items():
            print(f"{backend:<8} {compute_type:<8} {row['accuracy']:.2%}  {row['answers_per_second']:.1f} answers/s",
                  flush=True)
    return out


def round_rows(t: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 per last-dimension row, back in float: CTranslate2's quantization scheme."""
    scale = t.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    return (t / scale).round().clamp(-127, 127) * scale


def emulated_accuracy(checkpoint: str, count: int) -> dict:
    """Accuracy of the torch model in float32 and with every linear layer's weights and inputs
    rounded as int8 (the rounding without any int8 kernel)."""
    model, tokenizer, _ = load_checkpoint(checkpoint)
    data = questions(count)

    def accuracy() -> float:
        right = 0
        with torch.inference_mode():
            for i in range(0, len(data), BATCH):
                chunk = data[i:i + BATCH]
                rows = model.generate(pad_batch([tokenizer.encode(q) for q, _ in chunk]), MAX_ANSWER_CHARS).tolist()
                right += sum(tokenizer.decode(r) == a for r, (_, a) in zip(rows, chunk))
        return right / len(data)

    result = {"float32": accuracy()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in linears:
        layer.weight.data = round_rows(layer.weight.data)
    hooks = [layer.register_forward_pre_hook(lambda _, args: (round_rows(args[0]),)) for layer in linears]
    result["int8_rounding"] = accuracy()
    for hook in hooks:
        hook.remove()
    print(f"torch emulation: float32 {result['float32']:.2%}, int8 rounding {result['int8_rounding']:.2%}", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    checkpoint = str(Path(args.checkpoints) / "transformer")
    if args.child:  # one GEMM backend, chosen by the parent's CT2_USE_MKL
        print(json.dumps(engine_child(checkpoint, args.questions, args.threads, ["float32", "int8"])))
        return
    torch.set_num_threads(args.threads)
    result = {"environment": environment("cpu", MODULE, argv), "questions": args.questions, "batch": BATCH,
              "threads": args.threads, "engine": engine_rows(args.checkpoints, args.questions, args.threads),
              "torch_emulation": emulated_accuracy(checkpoint, args.questions)}
    save("int8_kernels_cpu", result, args.out or STUDY_RESULTS)


if __name__ == "__main__":
    main()
