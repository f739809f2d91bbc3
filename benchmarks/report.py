"""Assemble benchmarks/RESULTS.md from the JSON results in benchmarks/results/.

    python -m benchmarks.report
"""
import json
import shlex

from benchmarks.common import RESULTS, TORCH_INT8, hardware_line
from models import registry
from models.config import ModelConfig
from models.summary import PARTS, paper_config_table

ROOT = RESULTS.parent.parent


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


def present(*tables) -> list[str]:
    """The registered backends that have results in every one of `tables` (dicts keyed by backend)."""
    return [n for n in registry.names() if all(n in t for t in tables)]


def display(name: str) -> str:
    return registry.get(name).display_name


def table(header: list[str], rows: list[list], align: str = "l") -> list[str]:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def size_section() -> list[str]:
    parts = paper_config_table()
    names = list(parts)
    for n in names:
        config_path = ROOT / "checkpoints" / n / "config.json"
        if config_path.exists():
            shipped = json.loads(config_path.read_text())
            weights, width = shipped["weights"], shipped["architecture"]["d_model"]
            # a checkpoint whose count differs from the paper config's (another width, or the extra
            # place rows of random place offsets) says so and gives its own count
            other = ""
            if shipped["parameters"] != parts[n]["total"]:
                why = f"d_model {width}" if width != ModelConfig(backend=n).d_model else "with place-offset rows"
                other = f", {why}: {shipped['parameters']:,} parameters"
            parts[n]["disk"] = f"{weights['bytes'] / 1e6:.1f} MB ({weights['format']}{other})"
    rows = [[part, *(f"{parts[n][part]:,}" for n in names)] for part in (*PARTS, "total")]
    rows.append(["shipped weights on disk", *(parts[n].get("disk", "not shipped") for n in names)])
    return ["## 1. Model size", "", "Parameters at the paper config (d_model 512, 4+4 layers, 8 heads).", "",
            *table(["component", *map(display, names)], rows), "",
            "Command: `python -m models.summary`.", ""]


def throughput_section() -> list[str]:
    lines = ["## 2. Training throughput (batch 64, real data pipeline, backends alternating)", ""]
    for kind, data in results("train_throughput"):
        rows = []
        for precision, by_backend in data["precisions"].items():
            names = present(by_backend)
            first = by_backend[names[0]]["step_seconds"]["median"]
            for n in names:
                s = by_backend[n]["step_seconds"]
                rows.append([precision, n, f"{s['median'] * 1e3:.1f}", f"{s['p10'] * 1e3:.1f}-{s['p90'] * 1e3:.1f}",
                             f"{by_backend[n]['examples_per_second']:.1f}", f"{by_backend[n]['data_share']:.1%}",
                             f"**{s['median'] / first:.2f}**"])
        lines += [heading(kind.upper(), data), "", *table(
            ["precision", "backend", "median step (ms)", "p10-p90 (ms)", "examples/s", "data-generation share",
             f"step time / {names[0]}'s"], rows), ""]
    return lines


def serving_section() -> list[str]:
    lines = ["## 3. Serving latency in process (shipped checkpoints)", ""]
    found = False
    for kind, data in results("serving"):
        found = True
        rows = [[n, f"{data['single_ms'][n]['median']:.1f}", f"{data['single_ms'][n]['p99']:.1f}",
                 *(f"{data['batched'][b][n]['answers_per_second']:.0f}" for b in data["batched"])]
                for n in present(data["single_ms"])]
        lines += [f"**{kind.upper()}** — {hardware_line(data['environment'])}; {data['torch_threads']} torch thread(s) "
                  f"as each gunicorn worker uses. Command: `{data['environment']['command']}`", "", *table(
                      ["backend", "single p50 (ms)", "single p99 (ms)",
                       *(f"batch {b} answers/s" for b in data["batched"])], rows), ""]
    if not found:
        lines += ["Not measured yet: `python -m benchmarks.serving`.", ""]
    return lines


def optional(row: dict, key: str, form: str) -> str:
    """A field that older results lack, formatted, or '-'."""
    return form.format(row[key]) if row.get(key) is not None else "-"


def http_section() -> list[str]:
    lines = ["## 4. HTTP serving (gunicorn on loopback, shipped checkpoints)", ""]
    found = [http_rows(kind, data) for kind, data in results("http_load")]
    return lines + ([line for block in found for line in block] or
                    ["Not measured yet: `python -m benchmarks.http_load`.", ""])


def worker_load(row: dict) -> str:
    """Each worker's CPU (cores) in a run, with the client connections it held in brackets."""
    held = row.get("worker_connections") or [None] * len(row.get("worker_cpu_cores", []))
    return " / ".join(f"{cores:.2f}" + (f" ({n})" if n is not None else "")
                      for cores, n in zip(row.get("worker_cpu_cores", []), held)) or "–"


def http_rows(kind: str, data: dict) -> list[str]:
    """One result file's settings, levels and backends, with its ceiling, memory and merge notes."""
    lines = []
    if "settings" not in data:  # a result from before server settings were compared
        data = {**data, "settings": {f"w{data['workers']}": {**data, "batch_max": 1}}}
    rows, memory, ceilings, earlier = [], [], [], []
    for name, setting in data["settings"].items():
        for level, by_backend in setting["levels"].items():
            for n in present(by_backend):
                r = by_backend[n]
                runs = r.get("answers_per_second_runs", [])
                served = f"{r['answers_per_second']:.1f}" + (f" ({' / '.join(map(str, runs))})" if len(runs) > 1 else "")
                rows.append([name + (" (interleaved)" if setting.get("interleaved") else ""), level, n, served, f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                             r["errors"], r.get("shed_503", 0), r["wrong_answers"], r["requests"],
                             optional(r, "mean_pass_questions", "{:.1f}"),
                             optional(r, "pass_ms_per_answer", "{:.1f}"),
                             optional(r, "pass_busy_share", "{:.0%}"),
                             optional(r, "pass_cpu_share", "{:.0%}"),
                             optional(r, "server_cpu_ms_per_answer", "{:.1f}"),
                             optional(r, "client_cpu_share", "{:.0%}"),
                             worker_load(r)])
        ceilings.extend(f"{name} at {level} clients {c['requests_per_second']:.0f}/s"
                        for level, c in setting.get("http_ceiling", {}).items())
        before = ", ".join(f"{v:.0f}" for v in setting["rss_before_mib"].values())
        after = ", ".join(f"{v:.0f}" for v in setting["rss_after_mib"].values())
        memory.append(f"{name}: {before} -> {after}")
        measured = setting.get("measured")
        if measured and measured.get("command") != data["environment"].get("command"):
            earlier.append(f"{name}: {measured.get('date', '?')}, `{measured['command']}`")
    note = [f"Note: {data['note']}.", ""] if data.get("note") else []
    return lines + [f"**{kind.upper()}** — {hardware_line(data['environment'])}. "
                    f"Command: `{data['environment']['command']}`", "",
                    "A setting wWtTbB is W gunicorn workers with T torch threads each and cross-request batches of up "
                    "to B questions (b1: each request runs its own pass); dD holds a pass open at most D ms for the "
                    "callers it expects, dDf a fixed D ms (the batcher before it expected callers; without d, the "
                    "server's default: at most 2 ms, expecting callers); kK sets gunicorn's keep-alive to K s (k0: "
                    "a connection per request), r gives each worker its own listening socket (SO_REUSEPORT); g "
                    "runs gunicorn's own gthread worker (otherwise the balanced worker; rows without g measured "
                    "before 2026-11-24 13:40 UTC ran gunicorn's own too, as nothing else existed); aA sets the "
                    "balanced worker's wait before it accepts to A ms (default 1); +RUNTIME names PLACEVALUE_RUNTIME "
                    "(torch otherwise; auto: CTranslate2 int8 where this CPU's stored int8 evaluations allow it, float32 else). "
                    "Defaults: w2t1b64+auto (w2t1b64+ctranslate2 before 2026-12-04 17:00 UTC).", "", *note, *table(
                        ["setting", "clients", "backend", "answers/s", "p50 (ms)", "p99 (ms)", "errors", "503",
                         "wrong answers", "requests", "mean pass", "pass ms/answer", "pass busy", "pass on CPU",
                         "server CPU ms/answer", "client CPU",
                         "worker cores (connections)"], rows), "",
                    "Clients are closed-loop threads on one keep-alive connection each (a new one per request where "
                    "the server closes them, k0). Interleaved settings were "
                    "restarted in turn for every run (alternating order), so drift over minutes falls on each alike; "
                    "the others ran all their runs on one server start. Several runs: the median "
                    "run's row, every run's answers/s in brackets. Mean pass: questions per "
                    "batched pass (server /metrics). Pass ms/answer: the passes' wall time per question they answered; "
                    "pass busy: their share of the workers' wall time (the rest the pass thread stood idle); pass on "
                    "CPU: the pass thread's CPU time over its pass time (below 100% it waited for the GIL, which "
                    "request threads hold between its kernels; '-' where CTranslate2's own threads computed, or "
                    "for rows measured before 2026-12-04). Server CPU: master and workers, per answer. Client CPU: the "
                    "load generator's share of both cores, which the server could not use. Worker cores: each "
                    "worker's CPU in the median run, with the client connections it held a second in (one worker "
                    "near 1 core and one near 0 at many clients: the connections sat on one worker).",
                    "",
                    *([f"HTTP ceiling, GET /healthz from the same clients (requests/s): {'; '.join(ceilings)}.", ""]
                      if ceilings else []),
                    *([f"Settings measured by an earlier run (merged): {'; '.join(earlier)}.", ""] if earlier else []),
                    f"Worker RSS (MiB) before -> after: {'; '.join(memory)}.", ""]


def anchor_section() -> list[str]:
    """Our serving paths against CTranslate2 on the Transformer's weights, and against the FLOP floor."""
    data = load("anchor_ctranslate2_cpu")
    lines = ["## 4b. Serving against the anchor (CTranslate2) and the FLOP floor", ""]
    if not data:
        return lines + ["Not measured yet: `python -m benchmarks.anchor_ctranslate2`.", ""]
    flops, agreement = data["flops_per_question"], data["agreement"]
    lines += [heading("CPU", data), "",
              "Same questions, one process, paths alternating. FLOPs per question are counted by "
              "`torch.utils.flop_counter` over greedy answers; the floor is FLOPs / the fp32 GEMM peak measured "
              "in the same run (a 1024x1024 matrix multiply). CTranslate2 runs the shipped Transformer's own weights "
              f"(answers identical to ours on {agreement.get('ctranslate2_float32_same_as_transformer')} of "
              f"{agreement['questions']} questions in float32, {agreement.get('ctranslate2_int8_same_as_transformer')} "
              f"in int8). It has no spec for {', '.join(data['cannot_express'])}.", ""]
    http = load("http_load_cpu") or {}
    rows = []
    for threads, paths in data["threads"].items():
        peak = data["gemm_peak_flops"][threads]
        anchor_batched = max(paths.get("ctranslate2_float32", {}).get("batched", {0: 0}).values())
        anchor_single = min((paths[k]["single_ms"]["median"] for k in paths if k.startswith("ctranslate2")),
                            default=None)
        for name, row in paths.items():
            base = name.removesuffix(TORCH_INT8)  # a backend, its torch int8 path, or an anchor path
            backend = base if base in flops else "transformer"
            floor_ms = flops[backend] / peak * 1e3
            best_batched = max(row["batched"].values())
            shown = name if base not in flops else display(base) + (" torch int8" if name != base else "")
            rows.append([threads, shown, f"{row['single_ms']['median']:.1f}",
                         f"{floor_ms:.1f}", f"{floor_ms / row['single_ms']['median']:.0%}",
                         f"{row['single_ms']['median'] / anchor_single:.2f}" if anchor_single else "-",
                         f"{best_batched:.1f}", f"{best_batched / (peak / flops[backend]):.0%}",
                         f"{best_batched / anchor_batched:.2f}" if anchor_batched else "-"])
    lines += table(["threads", "path", "single p50 (ms)", "floor (ms)", "floor / p50", "p50 / best anchor p50",
                    "best batched answers/s", "of floor rate", "batched / anchor fp32 batched"], rows)
    lines += ["", "GFLOP per question: " + ", ".join(f"{display(n)} {f / 1e9:.2f}" for n, f in flops.items()) +
              "; fp32 GEMM peak: " + ", ".join(f"{t} thread(s) {v / 1e9:.0f} GFLOP/s"
                                               for t, v in data["gemm_peak_flops"].items()) + ".", ""]
    # HTTP at 16 clients against in-process batched throughput on both cores, of the same runtime
    both = data["threads"].get(max(data["threads"], key=int), {})
    anchor = max(both.get("ctranslate2_float32", {}).get("batched", {0: 0}).values())
    anchor_int8 = max(both.get("ctranslate2_int8", {}).get("batched", {0: 0}).values())
    http_rows = []
    for setting_name, setting in http.get("settings", {}).items():
        level = setting["levels"].get("16", {})
        runtime = setting.get("runtime", "torch")
        for n in present(level, both):
            # the in-process path of the runtime that served it (RUNTIME=auto's choice per backend is
            # recorded as served_runtimes; a pinned CTranslate2 left what it cannot express on torch)
            served_by = setting.get("served_runtimes", {}).get(n, runtime)
            path = {"ctranslate2": "ctranslate2_float32", "ctranslate2-int8": "ctranslate2_int8",
                    "torch-int8": n + TORCH_INT8}.get(served_by, n)
            if path not in both or (served_by.startswith("ctranslate2") and n in data["cannot_express"]):
                path = n
            inprocess = max(both[path]["batched"].values())
            served = level[n]["answers_per_second"]
            ceiling = pass_size_ceiling(data, path, setting, level[n].get("mean_pass_questions"))
            http_rows.append([setting_name, setting.get("measured", http["environment"])["date"], display(n),
                              f"{served:.1f}", f"{inprocess:.1f} ({path})",
                              f"{served / inprocess:.0%}",
                              f"{ceiling[1]:.1f} (batch {ceiling[0]})" if ceiling else "-",
                              f"{ceiling[1] / inprocess:.0%}" if ceiling else "-",
                              f"{served / ceiling[1]:.0%}" if ceiling else "-",
                              f"{served / anchor:.0%}" if anchor else "-",
                              f"{served / anchor_int8:.0%}" if anchor_int8 else "-"])
    if http_rows:
        lines += ["16 concurrent HTTP clients (section 4) against in-process batched throughput on both cores "
                  f"(this section, measured {data['environment']['date']}; separate runs: a row measured in "
                  "another sitting, or before a change to its backend's code, compares across them):", "",
                  *table(["setting", "HTTP measured", "backend", "HTTP answers/s",
                          "in-process batched answers/s (path)", "HTTP / in-process",
                          "pass-size ceiling answers/s", "ceiling / in-process", "HTTP / ceiling",
                          "HTTP / CTranslate2 fp32 batched", "HTTP / CTranslate2 int8 batched"],
                         http_rows), "",
                  "Pass-size ceiling: what the server's workers would answer if each ran passes of the size "
                  "16 clients formed in it (the measured batch size nearest the row's mean pass, within 25%) back to back "
                  "at in-process speed with its own torch threads: workers x that batch's in-process rate at "
                  "one worker's thread count. Ceiling / in-process is the share of the best batched rate that "
                  "passes of that size allow at all; HTTP / ceiling is what the server loses besides (idle "
                  "between passes, GIL waits, request handling on the same cores).", ""]
    return lines + anchor_gpu_lines()


def anchor_gpu_lines() -> list[str]:
    """The anchor on a GPU: CTranslate2's CUDA paths against our torch backends on the same GPU,
    then the Transformer over HTTP there on each runtime."""
    data = load("anchor_ctranslate2_gpu")
    if not data:
        return []
    paths, agreement = data["threads"][min(data["threads"], key=int)], data["agreement"]
    engine = {k: v for k, v in paths.items() if k.startswith("ctranslate2")}
    best_single = min(v["single_ms"]["median"] for v in engine.values())
    best_batched = max(max(v["batched"].values()) for v in engine.values())
    sizes = list(next(iter(paths.values()))["batched"])
    rows = [[display(n) if n in data["flops_per_question"] else n, f"{row['single_ms']['median']:.1f}",
             f"{row['single_ms']['median'] / best_single:.2f}",
             *(f"{row['batched'][b]:.0f}" for b in sizes), f"{max(row['batched'].values()) / best_batched:.2f}"]
            for n, row in paths.items()]
    kinds = [k.removeprefix("ctranslate2_") for k in engine]
    lines = [heading("GPU", data), "",
             "The same comparison on the GPU: CTranslate2's CUDA build in "
             f"{', '.join(kinds)}, our backends on torch, one process, paths alternating. Answers: "
             + ", ".join(f"{k} {agreement.get(f'ctranslate2_{k}_same_as_transformer')}" for k in kinds)
             + f" of {agreement['questions']} identical to ours. (The engine's wheel loads cuBLAS 12; "
             "that machine had cuBLAS 13 only, which it ran under the 12 names.)", "",
             *table(["path", "single p50 (ms)", "p50 / best anchor p50", *(f"batch {b} answers/s" for b in sizes),
                     "best batched / best anchor batched"], rows), ""]
    http = load("http_load_gpu") or {}
    served = []
    for name, setting in http.get("settings", {}).items():
        row = setting["levels"].get("16", {}).get("transformer")
        if row:
            served.append(f"{name} {row['answers_per_second']:.0f} answers/s (p50 {row['p50_ms']:.0f} ms)")
    if served:
        lines += ["The Transformer over HTTP on that GPU at 16 clients (section 4, GPU): " + "; ".join(served)
                  + f"; CTranslate2's best batched rate in process is {best_batched:.0f} answers/s.", ""]
    return lines


def pass_size_ceiling(data: dict, path: str, setting: dict, mean_pass) -> tuple[int, float] | None:
    """(batch size, answers/s): `setting`'s workers each running back-to-back passes of the measured
    batch size nearest `mean_pass` at the in-process rate of one worker's thread count."""
    timed = data["threads"].get(str(setting.get("torch_threads", 1)), {}).get(path, {})
    rates = dict(timed.get("batched", {}))
    if timed.get("single_ms"):  # a pass of one question: the single-question latency
        rates.setdefault("1", 1e3 / timed["single_ms"]["median"])
    if not mean_pass or not rates:
        return None
    size = min(rates, key=lambda b: abs(int(b) - mean_pass))
    if abs(int(size) - mean_pass) > 0.25 * mean_pass:  # no batch size near the passes was measured
        return None
    return int(size), setting.get("workers", 1) * rates[size]


def int8_section() -> list[str]:
    """CTranslate2's int8 on each GEMM backend against the int8 rounding emulated in torch."""
    data = load("int8_kernels_cpu")
    lines = ["## 4c. int8: the rounding or the kernel (shipped Transformer)", ""]
    if not data:
        return lines + ["Not measured yet: `python -m benchmarks.int8_kernels`.", ""]
    rows = [[backend, compute_type, f"{row['accuracy']:.2%}", f"{row['answers_per_second']:.1f}"]
            for backend, engine in data["engine"].items() for compute_type, row in engine["rows"].items()]
    emulation = data["torch_emulation"]
    return lines + [heading("CPU", data), "",
                    f"{data['questions']} fresh interpolate questions, batch {data['batch']}, {data['threads']} "
                    "threads. CTranslate2 with its default GEMM backend on this machine and with Intel MKL's "
                    "(`CT2_USE_MKL=1`), the same converted weights:", "",
                    *table(["GEMM backend", "compute type", "accuracy", "answers/s"], rows), "",
                    f"The int8 rounding alone, emulated in torch (every linear layer's weights and inputs rounded "
                    f"per row to int8, products summed in float32): {emulation['int8_rounding']:.2%} "
                    f"(float32 {emulation['float32']:.2%}).", ""]


def formulations_section() -> list[str]:
    """Rewritten kernels against their first formulations, one process, alternating."""
    data = load("formulations_cpu")
    lines = ["## 4d. Rewritten kernels against their first formulations (shipped checkpoints)", ""]
    if not data:
        return lines + ["Not measured yet: `python -m benchmarks.formulations`.", ""]
    rows, checks = [], []
    for name, result in data["backends"].items():
        rows += [[display(name), size, f"{row['first_ms']:.1f}", f"{row['current_ms']:.1f}",
                  f"{row['current_over_first']:.2f}", f"{row['first_answers_per_second']:.1f}",
                  f"{row['current_answers_per_second']:.1f}", row["passes"]] for size, row in result["batches"].items()]
        check = result["answers"]
        checks.append(f"{display(name)} {check['differing']} of {check['questions']} differ (correct: first "
                      f"{check['correct_first']}, current {check['correct_current']})")
    return lines + [heading("CPU", data), "",
                    f"Greedy passes, {data['threads']} torch thread(s) (one server worker's), the two formulations "
                    "alternating in one process; medians. MemoryFormer's hash: the first made its constants on "
                    "every call, summed integer products for the codes and took the weights as exp of summed "
                    "log-sigmoids; the current keeps the constants, takes the codes as one float32 product with the "
                    "powers of two and the weights as a direct product of sigmoids. The Performer's feature maps: "
                    "the first formed the full exponent, then subtracted the stabiliser, took exp, scaled and masked "
                    "padding, each a pass over the features; the current gathers the per-row constants into one "
                    "offset (+inf at padding).", "",
                    *table(["backend", "batch", "first (ms)", "current (ms)", "current / first", "first answers/s",
                            "current answers/s", "passes each"], rows), "",
                    f"Answers on fresh interpolate questions, first against current: {'; '.join(checks)}.", ""]


def decode_section() -> list[str]:
    lines = ["## 5. Decoding scaling (random weights, paper config, batch 1)", ""]
    for kind, data in results("decode_scaling"):
        names = present(data["backends"])
        rows = [[row["length"], *(f"{data['backends'][n][i]['ms_per_token']:.2f} / "
                                  f"{data['backends'][n][i]['state_bytes'] / 2**20:.3f}" for n in names)]
                for i, row in enumerate(data["backends"][names[0]])]
        last = {n: data["backends"][n][-1]["ms_per_token"] for n in names}
        ratios = ", ".join(f"{display(n)} **{last[names[0]] / last[n]:.2f}x**" for n in names[1:])
        lines += [heading(kind.upper(), data), "", f"![decode scaling {kind}](results/decode_scaling_{kind}.png)", "",
                  *table(["tokens", *(f"{display(n)} ms/token / state MiB" for n in names)], rows), "",
                  f"Per-token speed relative to {display(names[0])} at {rows[-1][0]} tokens: {ratios}.", ""]
    return lines


def memory_section() -> list[str]:
    lines = ["## 5b. Training memory against sequence length (decoder-only stack, batch 1; SLiM)", ""]
    found = False
    for kind, data in results("slim_memory"):
        found = True
        variants = data["variants"]
        lengths = sorted({r["length"] for rows in variants.values() for r in rows})

        def cell(rows, length):
            row = next((r for r in rows if r["length"] == length), None)
            if row is None:
                return "-"
            return row["error"] if "error" in row else f"{row['peak_bytes'] / 2**20:.0f} / {row['step_seconds']:.2f}"
        rows = [[length, *(cell(variants[v], length) for v in variants)] for length in lengths]
        lines += [heading(kind.upper(), data) + f"; {data['layers']} layers, SLiM with {data['slim_chunks']} chunks.",
                  "", f"![training memory {kind}](results/slim_memory_{kind}.png)", "",
                  *table(["tokens", *(f"{v}: peak MiB / s per step" for v in variants)], rows), ""]
    if not found:
        lines += ["Not measured yet: `python -m benchmarks.slim_memory`.", ""]
    return lines


MEASURED_ALTERNATIVES = {"transformer_alibi_cpu": "Transformer + ALiBi, no offsets (not shipped)",
                         "transformer_offsets_alibi_gpu": "Transformer + ALiBi + offsets, GPU seed 5 (shipped before)"}


def accuracy_section() -> list[str]:
    lines = ["## 6. Accuracy of the shipped checkpoints (`training.evaluate`, stored files)", ""]
    configs = {n: json.loads(path.read_text()) for n in registry.names()
               if (path := ROOT / "checkpoints" / n / "config.json").exists()}
    headers = {n: display(n) for n in configs}
    # checkpoints trained and evaluated from their stored files but not shipped (their records kept)
    for name, header in MEASURED_ALTERNATIVES.items():
        if (alternative := load(name)):
            configs[name], headers[name] = alternative, header
    names = list(configs)
    evaluations = sorted({k for c in configs.values() for k in c.get("evaluation", {})})
    rows = [[e, *(f"{r['accuracy']:.2%} ({r['correct']}/{r['total']})" if (r := configs[n]["evaluation"].get(e))
                  else "-" for n in names)] for e in evaluations]
    lines += table(["evaluation", *(headers[n] for n in names)], rows)
    lines += [f"\n{headers[n]}: {configs[n]['note']} Command: `{configs[n]['provenance']['command']}`"
              for n in names if n in MEASURED_ALTERNATIVES]
    shipped = load("shipped_accuracy")  # the plot and each checkpoint's recipe (benchmarks.shipped_accuracy)
    if shipped:
        recipes = [[display(n), m["steps"], *(m["recipe"][f] for f in ("source_positions", "digit_positions",
                                                                         "relative_positions", "balanced_share"))]
                   for n, m in shipped["checkpoints"].items()]
        lines += ["", f"Command: `{shipped['environment']['command']}`", "",
                  "![shipped checkpoints per place](results/shipped_accuracy.png)", "",
                  "How each shipped checkpoint was trained (its config.json):", "",
                  *table(["backend", "steps", "source positions", "digit positions", "relative positions",
                          "balanced share"], recipes)]
    for evaluation in evaluations:
        per_place = {n: configs[n]["evaluation"].get(evaluation, {}).get("per_place", {}) for n in names}
        places = list(dict.fromkeys(p for n in names for p in per_place[n]))
        if len(places) > 8:  # the per-place tables worth reading: splits with the rare and long places
            rows = [[p, *(f"{per_place[n][p]['accuracy']:.1%}" if p in per_place[n] else "-" for n in names)]
                    for p in places]
            lines += ["", f"Per place name, {evaluation}:", "", *table(["place", *(headers[n] for n in names)], rows)]
    return lines + [""]


def levers_section() -> list[str]:
    lines = []
    for kind, data in results("training_levers", ("cpu", "gpu", "cpu_accumulation")):
        names = present(*data["levers"])
        rows = [[r["lever"], *(f"{r[n]:.1f}" for n in names),
                 ", ".join(f"{r['warmup_seconds'][n]:.0f}" for n in names) if r.get("warmup_seconds") else "-"]
                for r in data["levers"]]
        lines += [heading(f"Training-throughput levers, {kind.replace('_', ', ').upper()}", data), "",
                  *table(["lever (one at a time)", *(f"{display(n)} ex/s" for n in names),
                          "warmup / compile s (" + ", ".join(map(display, names)) + ")"], rows),
                  "", f"Padding is {data['padding_share_batch64']:.1%} of source positions at batch 64"
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
    studies = {"levers_gpu": "recipe levers over seeds", "levers_cpu": "recipe levers over seeds",
               "redraw_cpu": "Performer feature-redraw interval", "memoryformer_cpu": "MemoryFormer tau and code weights"}
    for kind, data in results("time_to_accuracy", ("gpu", "gpu_fp32", "cpu", *studies)):
        precision = "bf16 autocast" if data["bf16"] else "fp32"
        device = "CPU" if kind.endswith("cpu") else "GPU"
        label = f"{device}, {precision}" + (f", {studies[kind]}" if kind in studies else "")
        lines += [heading(label, data), "", f"![time to accuracy {kind}](results/time_to_accuracy_{kind}.png)", "",
                  *([f"Note: {data['note']}.", ""] if data.get("note") else [])]
        for added in data.get("additions", []):  # runs added later with --append
            lines += [f"Added {added['environment']['date']}: `{added['environment']['command']}`"
                      + (f" ({added['note']})" if added.get("note") else "") + ".", ""]
        lines += lever_rows(data) if kind in studies else run_rows(data)
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


def memoryformer_size_section() -> list[str]:
    data = load("memoryformer_size_cpu")
    lines = ["## 6b. MemoryFormer: size and cost against tau and width (random weights)", ""]
    if not data:
        return lines + ["Not measured yet: `python -m benchmarks.memoryformer_size`.", ""]
    left = data["budget_bytes"] - data["shipped_weights_bytes"]
    rows = [[display(r["backend"]), r["d_model"], r["tau"] or "-", f"{r['parameters'] / 1e6:.1f}M",
             f"{r['int4_bytes'] / 1e6:.1f} MB", {True: "yes", False: "no"}.get(r.get("fits_budget"), "-"),
             f"{r['gflop_per_question']:.3f}", f"{r['single_ms']['median']:.1f}"] for r in data["rows"]]
    return lines + [heading("CPU", data), "",
                    f"The tracked tree may hold {data['budget_bytes'] / 2**20:.0f} MiB; the shipped checkpoints use "
                    f"{data['shipped_weights_bytes'] / 1e6:.1f} MB, leaving {left / 1e6:.1f} MB (less ~2 MiB of code and "
                    "docs) for a MemoryFormer checkpoint. FLOPs are counted by torch's counter plus the table lookups "
                    "(2 per looked-up value); latency is one question at a time, greedy to the end of an untrained "
                    "model's answer.", "", *([f"Note: {data['note']}.", ""] if data.get("note") else []),
                    *table(["backend", "d_model", "tau", "parameters", "int4 weights", "fits", "GFLOP/question",
                            "single p50 (ms)"], rows), "", *entropy_lines(data.get("trained_bucket_entropy"))]


def entropy_lines(entropy) -> list[str]:
    """The shipped MemoryFormer's bucket usage (how many of each chunk's rows its hash really uses)."""
    if not entropy:
        return []
    rows = [[name, f"{bits:.2f}"] for name, bits in entropy["per_layer"].items()]
    return [f"Bucket usage of the shipped checkpoint (`{entropy['checkpoint']}`, tau {entropy['tau']}), over one "
            f"teacher-forced pass of {entropy['questions']:,} fresh interpolate questions: entropy of table-row use "
            f"per chunk, averaged over chunks, in bits ({entropy['tau']} = every row used equally, 0 = one row): "
            f"mean **{entropy['mean']:.2f}**, lowest {entropy['min']:.2f}.", "",
            "<details><summary>per memory layer</summary>", "", *table(["memory layer", "bits"], rows), "",
            "</details>", ""]


def accuracy_levers_section(name: str = "accuracy_levers_cpu",
                            title: str = "6c. Accuracy levers: rare places and numbers longer than training",
                            optional: bool = False) -> list[str]:
    data = load(name)
    lines = [f"## {title}", ""]
    if not data:
        return [] if optional else lines + ["Not measured yet: `python -m benchmarks.accuracy_levers`.", ""]
    rows = [[display(r["backend"]), r["variant"], *(
        f"{r[k]['median']:.1%} ({', '.join(f'{v:.1%}' for v in r[k]['per_seed'])})"
        for k in ("train_worst_place", "train", "interpolate", "extrapolate"))] for r in data["levers"]]
    runs = data["runs"]
    places = list(dict.fromkeys(p for r in runs for p in r["extrapolate"]["per_place"]))
    per_place = [[display(r["backend"]), r["variant"], r["seed"],
                  *(f"{r['extrapolate']['per_place'].get(p, 0):.0%}" for p in places)] for r in runs]
    stops = [[display(r["backend"]), r["variant"], r["seed"], r.get("steps_to_average_target") or "not reached",
              r["steps_to_worst_place_target"] or "not reached", r["steps_run"]] for r in runs]
    sets = data["final_sets"]
    earlier = data.get("commands", [])[:-1]
    merged = ["The study grew over several invocations (`--merge`, finished runs kept in its work dir); the earlier "
              "ones: " + "; ".join(f"`{c}`" for c in earlier), ""] if earlier else []
    kind = "GPU" if data["environment"].get("device", "cpu").startswith("cuda") else "CPU"
    note = [f"Note: {data['note']}.", ""] if data.get("note") else []
    return lines + [heading(kind, data), "", *merged, *note, f"![accuracy levers](results/{name}.png)", "",
                    f"Every run trains on the training distribution only, for at most {data['max_steps']} steps (it "
                    f"stops once its held-out worst place reaches {data['target']:.1%}); the final "
                    f"weights answer fresh questions: {sets['train_per_place']} per place of the training "
                    f"distribution, {sets['interpolate']:,} interpolate, {sets['extrapolate']:,} extrapolate. "
                    "Medians over seeds, each seed in brackets.", "",
                    *table(["backend", "variant", "train, worst place", "train, all places", "interpolate",
                            "extrapolate"], rows), "",
                    "Extrapolate per place, every run:", "",
                    *table(["backend", "variant", "seed", *places], per_place), "",
                    "Steps until the held-out train set (the same questions per place) reached 99% on average, "
                    f"and until its worst place reached {data['target']:.1%} (the stopping rule under study):", "",
                    *table(["backend", "variant", "seed", "average >= 99%", f"worst place >= {data['target']:.1%}",
                            "steps run"], stops), "",
                    "Variant options:", "", *[f"- {v}: `{shlex.join(o)}`" if o else f"- {v}: none (CLI defaults)"
                                              for v, o in data["variant_options"].items()], ""]


def render() -> str:
    """RESULTS.md's text: INTRO.md, a section per result family, then ANALYSIS.md."""
    intro = (ROOT / "benchmarks" / "INTRO.md").read_text().splitlines()
    lines = intro + [""] + size_section() + throughput_section() + levers_section() + time_to_accuracy_section() + serving_section() \
        + http_section() + anchor_section() + int8_section() + formulations_section() + decode_section() + memory_section() + accuracy_section() + memoryformer_size_section() \
        + accuracy_levers_section() \
        + accuracy_levers_section("accuracy_levers_long_cpu", "6d. Length levers trained to the target (a longer "
                                  "step budget)", optional=True) \
        + accuracy_levers_section("accuracy_levers_gpu", "6e. Accuracy levers at the paper config on a GPU "
                                  "(more seeds)", optional=True)
    outro = ROOT / "benchmarks" / "ANALYSIS.md"
    if outro.exists():
        lines += outro.read_text().splitlines()
    return "\n".join(lines) + "\n"


def main():
    (ROOT / "benchmarks" / "RESULTS.md").write_text(render())
    print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
