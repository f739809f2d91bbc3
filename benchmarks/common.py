"""Shared helpers: environment description, robust statistics, result files."""
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import textwrap
from pathlib import Path

import torch

from models.runtimes.cpu import cpu_flags, cpuinfo_field

RESULTS = Path(__file__).resolve().parent / "results"  # what the report shows
STUDY_RESULTS = Path(__file__).resolve().parent / "studies" / "results"  # one-off studies
# `--tiny`: a model small enough to smoke-test a script in seconds
TINY_ARCH = dict(d_model=32, d_ff=64, n_heads=4, n_encoder_layers=1, n_decoder_layers=1)



def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def environment(device: str, module: str, argv=None) -> dict:
    """What a reader needs to reproduce a number: date, command, hardware, software."""
    argv = sys.argv[1:] if argv is None else argv
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
           "command": shlex.join(["python", "-m", module, *argv]),
           "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def hardware_line(env: dict) -> str:
    flags = f", {' '.join(env['cpu_flags'])}" if env.get("cpu_flags") else ""
    where = env.get("gpu") or f"{env['cpu']} ({env['cores']} cores{flags}, {env['torch_threads']} torch threads)"
    return f"{where}; torch {env['torch']}; {env['date']}"


def summary(values) -> dict:
    """Median and spread (min, p10, p90, max) of a list of timings."""
    ordered = sorted(values)
    n = len(ordered)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
            "p10": ordered[int(0.1 * (n - 1))], "p90": ordered[int(0.9 * (n - 1))], "n": n}


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def save(name: str, data: dict, out_dir=RESULTS) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def finish_figure(fig, title: str, env: dict, path) -> None:
    """Title every plot with its hardware, date and command, then save it as PNG."""
    import matplotlib.pyplot as plt
    # long commands must not run off the figure: about 12 characters of 9-point text per inch
    command = textwrap.fill(env["command"], width=int(fig.get_figwidth() * 12))
    fig.suptitle(f"{title} — {env.get('gpu') or env['cpu']}, {env['date']}\n{command}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _embedding_bag_flops(weight_shape, indices_shape, *args, out_shape=None, **kwargs) -> int:
    """A weighted embedding bag sums one weighted row per index: a multiply and an add per value.
    torch's FLOP counter has no formula for it, and MemoryFormer's layers are made of it."""
    count = 1
    for size in indices_shape:
        count *= size
    return 2 * count * weight_shape[-1]


# the two kernels F.embedding_bag dispatches to (with and without an autograd graph)
LOOKUP_FLOP_FORMULAS = {torch.ops.aten._embedding_bag: _embedding_bag_flops,
                        torch.ops.aten._embedding_bag_forward_only: _embedding_bag_flops}


def flops_per_question(model, ids) -> float:
    """Floating-point operations of one greedy answer, counted by torch.utils.flop_counter (matrix
    products and attention) plus weighted table lookups (embedding bags), averaged over questions
    answered one at a time."""
    from torch.utils.flop_counter import FlopCounterMode
    from models.tokenizer import MAX_ANSWER_CHARS, pad_batch
    counter = FlopCounterMode(display=False, custom_mapping=LOOKUP_FLOP_FORMULAS)
    with counter, torch.inference_mode():
        for row in ids:
            model.generate(pad_batch([row]), max_len=MAX_ANSWER_CHARS)
    return counter.get_total_flops() / len(ids)
