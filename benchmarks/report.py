"""Assemble benchmarks/RESULTS.md from the JSON results in benchmarks/results/.

    python -m benchmarks.report
"""
import json
import shlex
from pathlib import Path

from benchmarks.common import RESULTS, hardware_line
from models.config import ModelConfig
from models.summary import parameter_breakdown

ROOT = RESULTS.parent.parent
BACKENDS = ("transformer", "memsizer")


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def results(name: str, kinds=("cpu", "gpu")):
    """(kind, data) for each of `name`'s result files that exists, e.g. train_throughput_cpu."""
    for kind in kinds:
        data = load(f"{name}_{kind}")
        if data:
            yield kind, data


def heading(label: str, data: dict) -> str:
    """A result's bold label, then where, when and how it was measured."""
    return f"**{label}** — {hardware_line(data['environment'])}. Command: `{data['environment']['command']}`"


def size_section() -> list[str]:
    lines = ["## 1. Model size", "", "| component | Transformer | MemSizer |", "|---|---:|---:|"]
    parts = {n: parameter_breakdown(ModelConfig(attention=n)) for n in BACKENDS}
    for part in parts["transformer"]:
        lines.append(f"| {part} | {parts['transformer'][part]:,} | {parts['memsizer'][part]:,} |")
    for n in BACKENDS:
        config_path = ROOT / "checkpoints" / n / "config.json"
        if config_path.exists():
            weights = json.loads(config_path.read_text())["weights"]
            parts[n]["disk"] = f"{weights['bytes'] / 1e6:.1f} MB ({weights['format']})"
    lines.append(f"| shipped weights on disk | {parts['transformer'].get('disk', '-')} | {parts['memsizer'].get('disk', '-')} |")
    lines += ["", "Command: `python -m models.summary`.", ""]
    return lines


def throughput_section() -> list[str]:
    lines = ["## 2. Training throughput (batch 64, real data pipeline, backends alternating)", ""]
    for kind, data in results("train_throughput"):
        lines += [heading(kind.upper(), data), "",
                  "| precision | backend | median step (ms) | p10-p90 (ms) | examples/s | data-generation share |",
                  "|---|---|---:|---:|---:|---:|"]
        for precision, rows in data["precisions"].items():
            for n in BACKENDS:
                s = rows[n]["step_seconds"]
                lines.append(f"| {precision} | {n} | {s['median'] * 1e3:.1f} | {s['p10'] * 1e3:.1f}-{s['p90'] * 1e3:.1f} | "
                             f"{rows[n]['examples_per_second']:.1f} | {rows[n]['data_share']:.1%} |")
            lines.append(f"| {precision} | **MemSizer / Transformer step time** | "
                         f"**{rows['memsizer_over_transformer_step_time']:.2f}** | | | |")
        lines.append("")
    return lines


def serving_section() -> list[str]:
    data = load("serving_cpu")
    lines = ["## 3. Serving latency in process (shipped checkpoints)", ""]
    if not data:
        return lines + ["Not measured yet: `python -m benchmarks.serving`.", ""]
    lines += [f"{hardware_line(data['environment'])}; {data['torch_threads']} torch thread(s) as each gunicorn worker uses. "
              f"Command: `{data['environment']['command']}`", "",
              "| backend | single p50 (ms) | single p99 (ms) | " + " | ".join(f"batch {b} answers/s" for b in data["batched"]) + " |",
              "|---|---:|---:|" + "---:|" * len(data["batched"])]
    for n in BACKENDS:
        s = data["single_ms"][n]
        lines.append(f"| {n} | {s['median']:.1f} | {s['p99']:.1f} | " +
                     " | ".join(f"{data['batched'][b][n]['answers_per_second']:.0f}" for b in data["batched"]) + " |")
    return lines + [""]


def http_section() -> list[str]:
    data = load("http_load_cpu")
    lines = ["## 4. HTTP serving (gunicorn on loopback, shipped checkpoints)", ""]
    if not data:
        return lines + ["Not measured yet: `python -m benchmarks.http_load`.", ""]
    lines += [f"{hardware_line(data['environment'])}; {data['workers']} workers. Command: `{data['environment']['command']}`", "",
              "| clients | backend | answers/s | p50 (ms) | p99 (ms) | errors | wrong answers | requests |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for level, rows in data["levels"].items():
        for n in BACKENDS:
            r = rows[n]
            lines.append(f"| {level} | {n} | {r['answers_per_second']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                         f"{r['errors']} | {r['wrong_answers']} | {r['requests']} |")
    before = ", ".join(f"{v:.0f}" for v in data["rss_before_mib"].values())
    after = ", ".join(f"{v:.0f}" for v in data["rss_after_mib"].values())
    return lines + ["", f"Worker RSS (MiB) before: {before}; after: {after}.", ""]


def decode_section() -> list[str]:
    lines = ["## 5. Decoding scaling (random weights, paper config, batch 1)", ""]
    for kind, data in results("decode_scaling"):
        lines += [heading(kind.upper(), data),
                  "", f"![decode scaling {kind}](results/decode_scaling_{kind}.png)", "",
                  "| tokens | Transformer ms/token | Transformer state (MiB) | MemSizer ms/token | MemSizer state (MiB) |",
                  "|---:|---:|---:|---:|---:|"]
        for t, m in zip(data["backends"]["transformer"], data["backends"]["memsizer"]):
            lines.append(f"| {t['length']} | {t['ms_per_token']:.2f} | {t['state_bytes'] / 2**20:.2f} | "
                         f"{m['ms_per_token']:.2f} | {m['state_bytes'] / 2**20:.3f} |")
        lines += ["", f"Transformer / MemSizer per-token time at {data['backends']['memsizer'][-1]['length']} tokens: "
                      f"**{data['speedup_at_max_length']:.2f}x**.", ""]
    return lines


def accuracy_section() -> list[str]:
    lines = ["## 6. Accuracy of the shipped checkpoints (`training.evaluate`, stored int8 files)", ""]
    configs = {n: json.loads((ROOT / "checkpoints" / n / "config.json").read_text()) for n in BACKENDS}
    names = sorted({k for c in configs.values() for k in c.get("evaluation", {})})
    lines += ["| evaluation | Transformer | MemSizer |", "|---|---:|---:|"]
    for name in names:
        cells = []
        for n in BACKENDS:
            e = configs[n]["evaluation"].get(name)
            cells.append(f"{e['accuracy']:.2%} ({e['correct']}/{e['total']})" if e else "-")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    extrapolate = next((k for k in names if k.startswith("extrapolate")), None)
    if extrapolate:
        lines += ["", f"Per place name, {extrapolate} (place names above *ten billions* never occur in training):", "",
                  "| place | Transformer | MemSizer |", "|---|---:|---:|"]
        for place in configs["transformer"]["evaluation"][extrapolate]["per_place"]:
            cells = [f"{configs[n]['evaluation'][extrapolate]['per_place'].get(place, {}).get('accuracy', 0):.1%}"
                     for n in BACKENDS]
            lines.append(f"| {place} | {cells[0]} | {cells[1]} |")
    return lines + [""]


def levers_section() -> list[str]:
    lines = []
    for kind, data in results("training_levers", ("cpu", "gpu", "cpu_accumulation")):
        lines += [heading(f"Training-throughput levers, {kind.replace('_', ', ').upper()}", data), "",
                  "| lever (one at a time) | Transformer ex/s | MemSizer ex/s | warmup / compile s (T, M) |",
                  "|---|---:|---:|---:|"]
        for r in data["levers"]:
            warmup = r.get("warmup_seconds")
            warmup = f"{warmup['transformer']:.0f}, {warmup['memsizer']:.0f}" if warmup else "-"
            lines.append(f"| {r['lever']} | {r['transformer']:.1f} | {r['memsizer']:.1f} | {warmup} |")
        lines += ["", f"Padding is {data['padding_share_batch64']:.1%} of source positions at batch 64"
                  + (f", {data['padding_share_batch64_bucketed']:.1%} with length buckets"
                     if "padding_share_batch64_bucketed" in data else "")
                  + ": the most that bucketing batches by length could save of the encoder's work.", ""]
    return lines


def wall_time(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 600 else f"{seconds:.1f} s"


def time_to_accuracy_section() -> list[str]:
    lines = ["## Time to accuracy (default recipe and single-lever variants)", ""]
    for kind, data in results("time_to_accuracy", ("gpu", "gpu_fp32", "cpu", "levers_gpu", "levers_cpu")):
        precision = "bf16 autocast" if data["bf16"] else "fp32"
        device = "CPU" if kind.endswith("cpu") else "GPU"
        label = f"{device}, {precision}" + (", recipe levers over seeds" if "levers" in kind else "")
        lines += [heading(label, data), "", f"![time to accuracy {kind}](results/time_to_accuracy_{kind}.png)", "",
                  *([f"Note: {data['note']}.", ""] if data.get("note") else [])]
        lines += lever_rows(data) if "levers" in kind else run_rows(data)
        lines.append("")
    return lines


def run_rows(data) -> list[str]:
    target = f"{data['target']:.0%}"
    lines = [f"| backend | variant | steps to {target} | wall time to {target} | final accuracy | steps run |",
             "|---|---|---:|---:|---:|---:|"]
    for r in data["runs"]:
        lines.append(f"| {r['backend']} | {r['variant']} | {r['steps_to_target'] or 'not reached'} | "
                     f"{wall_time(r['seconds_to_target'])} | {r['final_accuracy']:.2%} | {r['steps_run']} |")
    if "--from-runs" in data["environment"]["command"]:  # runs made separately: give each one's command
        lines += ["", "Training commands:", *[f"- {r['backend']} ({r['variant']}): `{r['command']}`"
                                             for r in data["runs"]]]
    return lines


def lever_rows(data) -> list[str]:
    """One row per backend and variant: each seed's steps to the target and their median."""
    target = f"{data['target']:.0%}"
    lines = [f"| backend | variant | steps to {target}, per seed | median steps | reached | median wall time |",
             "|---|---|---|---:|---:|---:|"]
    for row in data["levers"]:
        per_seed = ", ".join(str(s) if s else "not reached" for s in row["steps_to_target"])
        lines.append(f"| {row['backend']} | {row['variant']} | {per_seed} | {row['median_steps']:,.0f} | "
                     f"{row['reached']}/{row['runs']} | {wall_time(row['median_seconds'])} |")
    variants = dict.fromkeys(r["variant"] for r in data["runs"])
    return lines + ["", "Each run is `python -m training.train` with the options after `--` in the command above, "
                        "`--seed`, and its variant's options:",
                    *[f"- {v}: `{shlex.join(options)}`" if (options := data["variant_options"][v])
                      else f"- {v}: none (the CLI defaults of the time)" for v in variants]]


def render() -> str:
    """RESULTS.md's text: INTRO.md, a section per result family, then ANALYSIS.md."""
    intro = (ROOT / "benchmarks" / "INTRO.md").read_text().splitlines()
    lines = intro + [""] + size_section() + throughput_section() + levers_section() + time_to_accuracy_section() + serving_section() \
        + http_section() + decode_section() + accuracy_section()
    outro = ROOT / "benchmarks" / "ANALYSIS.md"
    if outro.exists():
        lines += outro.read_text().splitlines()
    return "\n".join(lines) + "\n"


def main():
    (ROOT / "benchmarks" / "RESULTS.md").write_text(render())
    print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
