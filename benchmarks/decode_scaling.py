"""Decoding scaling (MemSizer's headline claim): per-token decode time and decoder self-attention
state memory vs generated length, every backend, random weights, batch 1.

MemSizer keeps a fixed (k, d) running sum per layer; the Transformer's KV cache grows by one
position per token. Backends alternate at every checkpoint length.

    python -m benchmarks.decode_scaling [--device cpu|cuda] [--max-length 4096] [--tiny]
"""
import argparse
import time

import torch

from benchmarks.common import RESULTS, TINY_ARCH, environment, finish_figure, save, sync
from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.tokenizer import BOS, Tokenizer
from models import registry

WINDOW = 16  # tokens timed at each checkpoint length

MODULE = "benchmarks.decode_scaling"


def lengths_up_to(max_length: int) -> list[int]:
    lengths, n = [], 16
    while n <= max_length:
        lengths.append(n)
        n *= 2
    return lengths


def decode_run(model, src, lengths, device):
    """Decode up to max(lengths) tokens; at each length, time the last WINDOW tokens and read the state."""
    state = model.start_decoding(src)
    token = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=device)
    rows, window_start, step = [], None, 0
    with torch.inference_mode():
        for length in lengths:
            while step < length:
                if step == length - WINDOW:
                    sync(device)
                    window_start = time.perf_counter()
                logits = model.decode_step(token, state)
                token = logits.argmax(dim=-1, keepdim=True)
                step += 1
            sync(device)
            rows.append({"length": length, "ms_per_token": (time.perf_counter() - window_start) / WINDOW * 1e3,
                         "state_bytes": state.self_attention_nbytes()})
    return rows


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in registry.names():
        rows = result["backends"][name]
        x = [r["length"] for r in rows]
        left.plot(x, [r["ms_per_token"] for r in rows], marker="o", label=name)
        right.plot(x, [r["state_bytes"] / 2**20 for r in rows], marker="o", label=name)
    for ax, label in ((left, "ms per generated token"), (right, "decoder self-attention state (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("generated length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    finish_figure(fig, f"Decoding scaling, {result['config']} config, batch 1", result["environment"], path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lengths = lengths_up_to(args.max_length)
    arch = TINY_ARCH if args.tiny else {}
    models = {}
    for name in registry.names():
        torch.manual_seed(0)
        config = ModelConfig(backend=name, max_target_len=args.max_length + 1, dropout=0.0, **arch)
        models[name] = Seq2Seq(config).to(args.device).eval()
    src = Tokenizer().batch_questions(["What is the hundred thousands digit of 41853604?"]).to(args.device)
    runs = {name: [] for name in registry.names()}
    for repeat in range(args.repeats):
        for name in (registry.names() if repeat % 2 == 0 else registry.names()[::-1]):
            runs[name].append(decode_run(models[name], src, lengths, args.device))
    result = {"environment": environment(args.device, MODULE, argv), "config": "tiny" if args.tiny else "paper",
              "window_tokens": WINDOW, "repeats": args.repeats, "backends": {}}
    for name in registry.names():
        result["backends"][name] = [
            {"length": length, "state_bytes": runs[name][0][i]["state_bytes"],
             "ms_per_token": sorted(run[i]["ms_per_token"] for run in runs[name])[len(runs[name]) // 2]}
            for i, length in enumerate(lengths)]
    baseline = registry.names()[0]
    last = {n: result["backends"][n][-1]["ms_per_token"] for n in registry.names()}
    # how many times faster per token than the baseline backend at the longest length
    result["speedup_vs_baseline_at_max_length"] = {"baseline": baseline,
                                                    **{n: last[baseline] / last[n] for n in registry.names()}}
    for i, length in enumerate(lengths):
        print(f"{length:>5} tokens: " + " | ".join(
            f"{n} {result['backends'][n][i]['ms_per_token']:.2f} ms/token "
            f"{result['backends'][n][i]['state_bytes'] / 2**20:.3f} MiB" for n in registry.names()))
    kind = ("gpu" if args.device.startswith("cuda") else "cpu") + ("_tiny" if args.tiny else "")
    out = args.out or RESULTS
    save(f"decode_scaling_{kind}", result, out)
    plot(result, f"{out}/decode_scaling_{kind}.png")
    for n in registry.names()[1:]:
        print(f"{n} is {result['speedup_vs_baseline_at_max_length'][n]:.2f}x as fast per token as {baseline} "
              f"at {lengths[-1]} tokens")


if __name__ == "__main__":
    main()
