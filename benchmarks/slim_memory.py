"""Training memory against target length (SLiM's headline): peak memory and time of one training
step of the encoder-decoder at the paper width (d 512, ff 2048, 8 heads; --layers encoder and
decoder layers), batch 1, a place-value question as the source and a synthetic target of L
tokens, for every registered backend plus each backend SLiM can train (models/slim.py: the
Performer, MemSizer) trained with SLiM at each --slim-slices slice length C.

Expected: softmax attention O(L^2) (the score matrix), the plain Performer O(L) (every layer's
activations for all L positions), SLiM flat in L at a fixed C (one slice's activations; the
states it carries are fixed-size). Every point runs in fresh processes: the peak is the
process's high-water mark on the CPU (resident set above the level before its first step) or
torch's max_memory_allocated on a GPU; its time is the median of --repeats steps after a warm-up
step. On the CPU the peak comes from a process of its own with glibc's mmap threshold fixed
(LIVE_MEMORY_ENV): by default glibc raises the threshold as large blocks are freed, so later blocks
of the same size stay in the heap and its fragments add to the resident set step after step, which
is the allocator's doing, not the algorithm's; the timed process keeps the default allocator (the
fixed threshold maps and unmaps every large block, slowing steps 1.5-2x), and its own peak is kept
too, as peak_bytes_default_malloc. The variants take turns at each length (interleaved), so a change in the machine's load
falls on all of them alike. A point that runs out of memory or past --max-seconds is recorded as
such, and longer lengths of that variant are skipped.

    python -m benchmarks.slim_memory [--device cpu|cuda] [--lengths 512,...,16384] [--layers 2]
    python -m benchmarks.slim_memory --gradients --lengths 16384 --slim-slices 64

--gradients measures exactness instead (slim_gradients_<device>.json): at the tiny width, one
batch with an L-token target, every gradient of plain back-propagation and of SLiM under bf16
autocast against plain float64 back-propagation (relative error over all gradients as one vector).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import psutil
import torch

from benchmarks.common import RESULTS, TINY_ARCH, environment, finish_figure, save, sync
from models import registry
from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.slim import check_slim, slim_backward
from models.tokenizer import Tokenizer

MODULE = "benchmarks.slim_memory"
DEFAULT_LENGTHS = "512,1024,2048,4096,8192,16384"
# glibc's starting threshold (128 KiB), fixed: blocks above it are returned to the system when freed
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
QUESTION = "What is the hundred millions digit of 123456789012?"


def slim_capable(name: str) -> bool:
    """Whether SLiM can train the backend (a causal state it can rewind; models/slim.py says why not)."""
    try:
        check_slim(Seq2Seq(ModelConfig(backend=name, **TINY_ARCH)))
    except ValueError:
        return False
    return True


def variants(slices: list[int]) -> dict:
    """name -> (backend, SLiM slice length or 0): every backend, then each that SLiM can train, with SLiM."""
    out = {name: (name, 0) for name in registry.names()}
    out.update({f"{name}+slim{c}": (name, c) for name in registry.names() if slim_capable(name) for c in slices})
    return out


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def measure_point(backend: str, slice_length: int, length: int, layers: int, device: str, tiny: bool = False,
                  repeats: int = 3) -> dict:
    """Training steps (forward, backward, optimizer) at target length `length`: a warm-up, then
    `repeats` timed ones; runs in its own process."""
    torch.manual_seed(0)
    width = {k: v for k, v in TINY_ARCH.items() if not k.startswith("n_")} if tiny else {}
    config = ModelConfig(backend=backend, max_target_len=length, n_encoder_layers=layers, n_decoder_layers=layers,
                         **width)
    model = Seq2Seq(config).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    src = Tokenizer().batch_questions([QUESTION]).to(device)
    target = torch.randint(3, config.vocab_size, (1, length + 1), device=device)
    tgt_in, tgt_out = target[:, :-1], target[:, 1:]

    for p in model.parameters():  # gradients exist before the measured step: its peak is activations alone
        p.grad = torch.zeros_like(p)

    def step():
        optimizer.zero_grad(set_to_none=False)
        if slice_length:
            slim_backward(model, src, tgt_in, tgt_out, slice_length)
        else:
            model(src, tgt_in, tgt_out)[1].backward()
        optimizer.step()

    def timed_steps() -> list[float]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - start)
        return times

    if device.startswith("cuda"):
        step()  # warm the allocator and kernels outside the measured peak
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = timed_steps()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = rss_bytes()
        step()  # the warm-up counts towards the peak: every step is alike
        times = timed_steps()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"length": length, "peak_bytes": peak, "seconds_per_step": statistics.median(times),
            "step_seconds": times}


def gradient_errors(backend: str, length: int, slice_length: int) -> dict:
    """Relative errors from float64 plain back-propagation: plain bf16 and SLiM bf16 (C = slice_length)."""
    def grads(dtype, slim, bf16):
        torch.manual_seed(0)
        model = Seq2Seq(ModelConfig(backend=backend, max_target_len=length, dropout=0.0, **TINY_ARCH)).to(dtype).train()
        src = Tokenizer().batch_questions([QUESTION])
        target = torch.randint(3, model.config.vocab_size, (1, length + 1), generator=torch.Generator().manual_seed(1))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
        if slim:
            slim_backward(model, src, target[:, :-1], target[:, 1:], slice_length, autocast=autocast)
        else:
            with autocast:
                model(src, target[:, :-1], target[:, 1:])[1].backward()
        return {k: p.grad.double() for k, p in model.named_parameters() if p.grad is not None}

    exact = grads(torch.float64, False, False)
    norm = sum((g ** 2).sum() for g in exact.values()).sqrt()

    def error(got):
        return (sum(((got[k] - exact[k]) ** 2).sum() for k in exact).sqrt() / norm).item()

    sliced = grads(torch.float32, True, True)
    return {"backend": backend, "length": length, "slice": slice_length,
            "plain_bf16_error": error(grads(torch.float32, False, True)), "slim_bf16_error": error(sliced),
            "slim_finite": all(bool(torch.isfinite(g).all()) for g in sliced.values())}


def _child(spec: dict, args, env: dict | None) -> dict:
    done = subprocess.run([sys.executable, "-m", MODULE, "--point", json.dumps(spec)], capture_output=True,
                          text=True, timeout=args.max_seconds, env=env)
    if done.returncode != 0:
        killed = done.returncode in (-9, 137) or "out of memory" in done.stderr.lower()
        return {"length": spec["length"],
                "error": "out of memory" if killed else done.stderr.strip().splitlines()[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_point(backend, slice_length, length, args) -> dict:
    """The point in child processes, so every peak is that point's alone: on the CPU one for the live
    peak (fixed mmap threshold, a warm-up and one step) and one for the time (default allocator)."""
    spec = {"backend": backend, "slice": slice_length, "length": length, "layers": args.layers,
            "device": args.device, "threads": torch.get_num_threads(), "tiny": args.tiny, "repeats": args.repeats}
    try:
        timed = _child(spec, args, None)
        if "error" in timed or args.device.startswith("cuda"):
            return timed
        live = _child({**spec, "repeats": 1}, args, {**os.environ, **LIVE_MEMORY_ENV})
    except subprocess.TimeoutExpired:
        return {"length": length, "error": f"over {args.max_seconds:.0f} s"}
    if "error" in live:
        return live
    return {**timed, "peak_bytes": live["peak_bytes"], "peak_bytes_default_malloc": timed["peak_bytes"]}


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in result["variants"].items():
        rows = [r for r in rows if "error" not in r]
        x = [r["length"] for r in rows]
        left.plot(x, [r["peak_bytes"] / 2**20 for r in rows], marker="o", label=name)
        right.plot(x, [r["seconds_per_step"] for r in rows], marker="o", label=name)
    for ax, label in ((left, "peak training memory (MiB)"), (right, "seconds per training step")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("target length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    finish_figure(fig, f"Training memory vs target length, {result['layers']}+{result['layers']} layers, d 512, batch 1",
                  result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", default=DEFAULT_LENGTHS)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--slim-slices", default="64,256", help="SLiM slice lengths C (target positions per slice)")
    parser.add_argument("--max-seconds", type=float, default=300, help="give up on a point after this long")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per point, after a warm-up step")
    parser.add_argument("--tiny", action="store_true", help="tiny width, to smoke-test the script")
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--name", default=None, help="result file name (default slim_memory_<device>)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--gradients", action="store_true", help="measure bf16 exactness instead (tiny width)")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gradients:
        rows = [gradient_errors(name, length, int(c)) for name in registry.names() if slim_capable(name)
                for length in map(int, args.lengths.split(",")) for c in args.slim_slices.split(",")]
        for row in rows:
            print(row, flush=True)
        save(args.name or "slim_gradients_cpu", {"environment": environment("cpu", MODULE, argv),
                                                 "architecture": TINY_ARCH, "rows": rows}, args.out or RESULTS)
        return
    if args.point:  # child process: one measurement, printed as JSON
        spec = json.loads(args.point)
        torch.set_num_threads(spec["threads"])
        print(json.dumps(measure_point(spec["backend"], spec["slice"], spec["length"], spec["layers"],
                                       spec["device"], spec["tiny"], spec["repeats"])))
        return
    chosen = variants([int(c) for c in args.slim_slices.split(",")])
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    lengths = [int(n) for n in args.lengths.split(",")]
    result = {"environment": environment(args.device, MODULE, argv), "layers": args.layers, "tiny": args.tiny,
              "slim_slices": args.slim_slices, "variants": {}}
    result["variants"] = {name: [] for name in chosen}
    for length in lengths:  # interleaved: every variant at this length before the next length
        for name, (backend, slice_length) in chosen.items():
            rows = result["variants"][name]
            if rows and "error" in rows[-1]:
                continue
            row = run_point(backend, slice_length, length, args)
            rows.append(row)
            shown = row.get("error") or f"{row['peak_bytes'] / 2**20:8.1f} MiB {row['seconds_per_step']:7.2f} s"
            print(f"{name:18s} L={length:6d}  {shown}", flush=True)
    kind = "gpu" if args.device.startswith("cuda") else "cpu"
    name = args.name or f"slim_memory_{kind}" + ("_tiny" if args.tiny else "")
    path = save(name, result, args.out or RESULTS)
    plot(result, path.with_suffix(".png"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
