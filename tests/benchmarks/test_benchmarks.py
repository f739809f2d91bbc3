"""Smoke tests: every script `make bench` runs works at a tiny size and writes its result (no timings
asserted); the report is generated from the committed results."""
import argparse
import json
import time
from pathlib import Path

import pytest
import torch

from benchmarks import decode_scaling, http_load, serving, shipped_accuracy, slim_memory, train_throughput
from models import registry

pytestmark = pytest.mark.slow


def test_train_throughput_and_decode_scaling_tiny(tmp_path):
    train_throughput.main(["--tiny", "--steps", "2", "--warmup", "1", "--device", "cpu", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "train_throughput_cpu_tiny.json").read_text())
    assert set(data["precisions"]) == {"fp32", "bf16"} and data["precisions"]["fp32"]["memsizer"]["step_seconds"]["n"] == 2
    assert data["precisions"]["fp32"]["transformer"]["step_time_vs_baseline"] == 1.0
    decode_scaling.main(["--tiny", "--max-length", "64", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "decode_scaling_cpu_tiny.json").read_text())["backends"]
    assert [r["length"] for r in rows["memsizer"]] == [16, 32, 64]
    assert len({r["state_bytes"] for r in rows["memsizer"]}) == 1, "MemSizer's state must not grow"
    assert rows["transformer"][-1]["state_bytes"] == 4 * rows["transformer"][0]["state_bytes"]
    assert (tmp_path / "decode_scaling_cpu_tiny.png").stat().st_size > 0


def test_http_load_settings_are_named_and_validated():
    default = http_load.SETTINGS["default"]
    assert default.recorded() == {"workers": 2, "torch_threads": 1, "batch_max": 64, "runtime": "auto"}
    assert http_load.SETTINGS["ctranslate2-fixed-window-2ms"].recorded() == {
        "workers": 2, "torch_threads": 1, "batch_max": 64, "runtime": "ctranslate2", "batch_delay_ms": 2.0,
        "expect_callers": False}
    assert http_load.SETTINGS["ctranslate2-gthread-reuse-port"].environment("cpu") == {
        "PLACEVALUE_DEVICE": "cpu", "GUNICORN_WORKERS": "2", "PLACEVALUE_TORCH_THREADS": "1",
        "PLACEVALUE_BATCH_MAX": "64", "PLACEVALUE_RUNTIME": "ctranslate2", "GUNICORN_REUSE_PORT": "true",
        "GUNICORN_WORKER_CLASS": "gthread"}
    defined = http_load.chosen_settings("mine,default", '{"mine": {"workers": 1, "batch_max": 8, "batch_delay_ms": 12.5,'
                                                        ' "expect_callers": false, "keepalive_s": 0, "runtime": "torch-int8"}}')
    assert list(defined) == ["mine", "default"]
    assert defined["mine"].environment("cpu") == {
        "PLACEVALUE_DEVICE": "cpu", "GUNICORN_WORKERS": "1", "PLACEVALUE_TORCH_THREADS": "1", "PLACEVALUE_BATCH_MAX": "8",
        "PLACEVALUE_RUNTIME": "torch-int8", "PLACEVALUE_BATCH_DELAY_MS": "12.5",
        "PLACEVALUE_BATCH_EXPECT_CALLERS": "false", "GUNICORN_KEEPALIVE": "0"}
    for names, define, error in [("nope", None, "unknown setting nope"),
                                 ("x", '{"x": {"workers": 0}}', "greater than or equal to 1"),
                                 ("x", '{"x": {"batch": 8}}', "Extra inputs are not permitted"),
                                 ("x", '{"x": {"worker_class": "gthread", "accept_defer_ms": 5}}', "accept wait"),
                                 ("x", '{"x": ', "Invalid JSON")]:
        with pytest.raises(SystemExit, match=error):
            http_load.chosen_settings(names, define)
    # every setting the result file holds is one of the named ones, with the fields it names
    stored = json.loads((Path(http_load.RESULTS) / "http_load_cpu.json").read_text())["settings"]
    for name, row in stored.items():
        assert {k: v for k, v in row.items() if k in http_load.ServerSetting.model_fields} == \
            http_load.SETTINGS[name].recorded(), name


# one-worker settings for the tiny servers
ONE_WORKER = json.dumps({"unbatched": {"workers": 1, "batch_max": 1, "runtime": "torch"},
                         "batched": {"workers": 1, "batch_max": 8, "runtime": "torch"},
                         "ct2-fixed-window": {"workers": 1, "batch_max": 8, "batch_delay_ms": 5, "expect_callers": False,
                                              "runtime": "ctranslate2"}})


def test_serving_and_http_load_tiny(tmp_path, tiny_checkpoints):
    serving.main(["--checkpoints", str(tiny_checkpoints), "--questions", "4", "--batch-sizes", "2",
                  "--batch-repeats", "1", "--explanations", "2", "--beside-seconds", "0.5", "--out", str(tmp_path)])
    in_process = json.loads((tmp_path / "serving_cpu.json").read_text())
    assert in_process["single_ms"]["memsizer"]["n"] == 4
    explain = in_process["explain"]["memsizer"]
    assert explain["ms"]["n"] == 2 and explain["ms"]["p95"] > 0
    assert explain["answers_per_second_alone"] > 0 and explain["answers_per_second_beside"] > 0
    from tests.conftest import free_port
    http_load.main(["--checkpoints", str(tiny_checkpoints), "--concurrency", "1,2", "--requests", "6",
                    "--settings", "unbatched,ct2-fixed-window", "--port", str(free_port()), "--ceiling-seconds", "0.3",
                    "--define", ONE_WORKER,
                    "--repeats", "2",
                    "--out", str(tmp_path)])
    settings = json.loads((tmp_path / "http_load_cpu.json").read_text())["settings"]
    assert list(settings) == ["unbatched", "ct2-fixed-window"]
    for setting in settings.values():
        row = setting["levels"]["2"]["transformer"]
        assert row["requests"] == 6 and row["errors"] == 0 and row["shed_503"] == 0
        # of two runs the lower median is kept
        assert len(row["answers_per_second_runs"]) == 2
        assert round(row["answers_per_second"], 1) == min(row["answers_per_second_runs"])
        # the CPU accounting and the pass sizes come from the real server, not defaults ( /proc
        # counts CPU in 10 ms ticks, so a tiny run's server share may round to 0)
        assert row["server_cpu_ms_per_answer"] >= 0 and 0 < row["client_cpu_share"] < 1
        assert len(row["worker_cpu_cores"]) == 1 and row["mean_pass_questions"] >= 1
        assert row["pass_ms_per_answer"] > 0 and 0 < row["pass_busy_share"] <= 1
        assert setting["http_ceiling"]["2"]["requests_per_second"] > 0
    # without batching every pass holds one question
    assert settings["unbatched"]["levels"]["2"]["transformer"]["mean_pass_questions"] == 1
    assert settings["ct2-fixed-window"]["runtime"] == "ctranslate2"
    # what served each backend, as the server's /models said
    assert settings["ct2-fixed-window"]["served_runtimes"]["transformer"] == "ctranslate2"
    assert settings["unbatched"]["served_runtimes"]["memsizer"] == "torch"
    # torch computes on the pass thread; CTranslate2 on threads of its own, so it reports no share
    assert 0 < settings["unbatched"]["levels"]["2"]["transformer"]["pass_cpu_share"] <= 1.05
    assert settings["ct2-fixed-window"]["levels"]["2"]["transformer"]["pass_cpu_share"] is None
    assert settings["ct2-fixed-window"]["expect_callers"] is False
    # --interleave restarts each setting for every repeat; the rows are the same medians of all runs
    http_load.main(["--checkpoints", str(tiny_checkpoints), "--concurrency", "2", "--requests", "4",
                    "--settings", "unbatched,batched", "--define", ONE_WORKER, "--port", str(free_port()), "--ceiling-seconds", "0.1",
                    "--repeats", "2", "--interleave", "--out", str(tmp_path / "interleaved")])
    interleaved = json.loads((tmp_path / "interleaved" / "http_load_cpu.json").read_text())["settings"]
    assert list(interleaved) == ["unbatched", "batched"]
    for setting in interleaved.values():
        assert setting["interleaved"] is True
        assert len(setting["levels"]["2"]["transformer"]["answers_per_second_runs"]) == 2
    # --merge re-measures one setting and keeps the other with the command that measured it
    http_load.main(["--checkpoints", str(tiny_checkpoints), "--concurrency", "1", "--requests", "2",
                    "--settings", "unbatched", "--define", ONE_WORKER, "--port", str(free_port()), "--ceiling-seconds", "0.1", "--merge",
                    "--out", str(tmp_path)])
    merged = json.loads((tmp_path / "http_load_cpu.json").read_text())["settings"]
    assert set(merged) == {"unbatched", "ct2-fixed-window"} and list(merged["unbatched"]["levels"]) == ["1"]
    assert "--merge" in merged["unbatched"]["measured"]["command"]
    assert "--merge" not in merged["ct2-fixed-window"]["measured"]["command"]


def test_training_levers_tiny(tmp_path):
    # torch.compile is left out: compiling takes minutes here, longer than the rest of the suite's file
    levers = "baseline: fp32 batch 64,batch 128,batch 256 as 4 x 64 accumulated,length buckets (pool of 8 batches)"
    train_throughput.main(["--tiny", "--steps", "2", "--warmup", "0", "--device", "cpu", "--levers", levers,
                           "--out", str(tmp_path), "--name", "subset"])
    data = json.loads((tmp_path / "subset.json").read_text())
    assert [r["lever"] for r in data["levers"]] == levers.split(",")
    assert all(r[n] > 0 for r in data["levers"] for n in ("transformer", "memsizer"))
    assert 0 < data["padding_share_batch64_bucketed"] < 0.5 * data["padding_share_batch64"] < 0.25


def test_report_and_readme_table_are_generated_from_the_committed_result_files():
    """REPORT.md and the README's table are outputs: edit REPORT.template.md or the JSON, then run
    benchmarks.report."""
    from benchmarks import report
    assert (report.ROOT / "benchmarks" / "REPORT.md").read_text() == report.render(), \
        "benchmarks/REPORT.md is stale: run python -m benchmarks.report"
    readme = (report.ROOT / "README.md").read_text()
    assert report.readme_table() in readme, "the README's results table is stale: run python -m benchmarks.report"
    assert len(report.render().splitlines()) <= 400 and len(readme.splitlines()) <= 150


def test_a_promotion_row_shows_the_runs_past_the_lineage_shared_with_the_shipped_checkpoint():
    from benchmarks import report
    base, tune, other = "python -m training.train --model x", "python -m training.train --init-from a", \
        "python -m training.train --init-from a --group-size 16"
    assert report.runs_past_shared(f"{base} && {tune}", base) == tune  # a fine-tune of the shipped one
    assert report.runs_past_shared(f"{base} && {other}", f"{base} && {tune}") == other  # its sibling
    fresh = "python -m training.train --model x --seed 1 && python -m training.train --init-from b"
    assert report.runs_past_shared(fresh, f"{base} && {tune}") == fresh  # trained afresh: all of it


def test_a_result_whose_rows_came_from_several_runs_names_each_runs_command():
    from benchmarks import report
    env = {"command": "python -m benchmarks.attribution --backends memsizer", "cpu": "X", "cores": 2,
           "torch": "2", "torch_threads": 1, "date": "today", "cpu_flags": []}
    data = {"environment": env, "backends": {
        "memsizer": {"measured": env},
        "performer": {"measured": {**env, "command": "python -m benchmarks.attribution --backends performer"}}}}
    line = report.measured_rows(data)
    assert "`python -m benchmarks.attribution --backends memsizer` (MemSizer)" in line
    assert "`python -m benchmarks.attribution --backends performer` (Performer)" in line
    data["backends"]["performer"]["measured"] = env
    assert line != report.measured_rows(data) == report.measured(data)


def test_slim_memory_tiny(tmp_path):
    assert list(slim_memory.variants([4, 64])) == [*registry.names(), "memsizer+slim4", "memsizer+slim64",
                                                   "performer+slim4", "performer+slim64"]
    slim_memory.main(["--tiny", "--lengths", "32", "--layers", "1", "--slim-slices", "4", "--device", "cpu",
                      "--only", "memsizer,memsizer+slim4", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "slim_memory_cpu_tiny.json").read_text())
    assert list(data["variants"]) == ["memsizer", "memsizer+slim4"]
    for rows in data["variants"].values():
        assert [r["length"] for r in rows] == [32]
        # the live peak from its own process (fixed mmap threshold), the default allocator's beside it
        assert all(r["peak_bytes"] >= 0 and r["peak_bytes_default_malloc"] >= 0 for r in rows)
        assert all(len(r["step_seconds"]) == 3 for r in rows)
        assert all(r["seconds_per_step"] == sorted(r["step_seconds"])[1] for r in rows), "the median of 3"
    assert (tmp_path / "slim_memory_cpu_tiny.png").stat().st_size > 0
    slim_memory.main(["--gradients", "--lengths", "24", "--slim-slices", "4", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "slim_gradients_cpu.json").read_text())["rows"]
    assert [(r["backend"], r["length"], r["slice"]) for r in rows] == [("memsizer", 24, 4), ("performer", 24, 4)]
    # bf16 rounds: both errors are above float32's and far below 1 (the tests hold SLiM to plain bf16's)
    assert all(r["slim_finite"] and 1e-6 < r["slim_bf16_error"] < 0.1 and 1e-6 < r["plain_bf16_error"] < 0.1
               for r in rows), rows


def test_flop_count_includes_weighted_table_lookups():
    """MemoryFormer's arithmetic is in embedding bags, which torch's counter alone would miss."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.common import LOOKUP_FLOP_FORMULAS
    tables, rows = torch.randn(64, 16, requires_grad=True), torch.randint(0, 64, (10, 4))
    for context in (torch.enable_grad, torch.inference_mode):
        counter = FlopCounterMode(display=False, custom_mapping=LOOKUP_FLOP_FORMULAS)
        with counter, context():
            F.embedding_bag(rows, tables, per_sample_weights=torch.rand(10, 4), mode="sum")
        assert counter.get_total_flops() == 2 * 10 * 4 * 16, context


def test_shipped_accuracy_reads_each_checkpoints_records(tmp_path, tiny_checkpoints):
    shipped_accuracy.main(["--checkpoints", str(tiny_checkpoints), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "shipped_accuracy.json").read_text())
    assert list(result["checkpoints"]) == list(registry.names())
    memsizer = result["checkpoints"]["memsizer"]
    # the fixture's records: train 3/4 units, 1/4 billions; the recipe as the tiny config says
    assert memsizer["splits"]["train"]["per_place"] == {"units": 0.75, "billions": 0.25}
    assert memsizer["recipe"]["digit_positions"] == "abacus" and memsizer["steps"] == 7
    assert memsizer["beyond"] == {"evaluation": "beyond_test", "accuracy": 0.5, "total": 4}
    assert "beyond" not in memsizer["splits"]  # not a split of the per-place charts
    assert (tmp_path / "shipped_accuracy.png").stat().st_size > 10_000


def test_http_load_counts_the_connections_each_worker_holds(tiny_checkpoints):
    from tests.conftest import free_port
    process, url = http_load.start_server(free_port(), http_load.ServerSetting(batch_max=8, runtime="torch"), str(tiny_checkpoints))
    try:
        port = int(url.rsplit(":", 1)[1])
        assert sorted(http_load.connections_per_worker(process.pid, port)) == http_load.worker_pids(process.pid)
        clients = [http_load.Client(url) for _ in range(5)]
        for client in clients:
            assert client.request("GET", "/healthz")[0] == 200
        assert sum(http_load.connections_per_worker(process.pid, port).values()) == 5
        for client in clients[:2]:
            client.close()
        deadline = time.monotonic() + 5  # the server sees the close a moment later
        while sum(http_load.connections_per_worker(process.pid, port).values()) != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(http_load.connections_per_worker(process.pid, port).values()) == 3
        for client in clients[2:]:
            client.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("quick", [False, True])
def test_the_longer_offsets_row_is_the_offsets_row_at_three_times_the_budget(tmp_path, quick):
    from benchmarks import comparison
    args = comparison.parse_args(["--work-dir", str(tmp_path)] + (["--quick"] if quick else []))
    assert "offsets-long" in args.levers  # in the default grid

    def command(lever):
        words = comparison.training_command("memsizer", lever, 0, args, tmp_path / lever)
        budget = {}
        for flag in ("--max-steps", "--eval-every", "--out", "--run-dir"):  # the rest must be alike
            at = words.index(flag)
            budget[flag] = words.pop(at + 1)
            words.pop(at)
        return int(budget["--max-steps"]), int(budget["--eval-every"]), words
    short, long = command("offsets"), command("offsets-long")
    assert long[0] == 3 * short[0] and long[0] // long[1] == short[0] // short[1]  # as many evaluations
    assert long[2] == short[2]  # every other option alike


@pytest.mark.slow
def test_comparison_quick_trains_every_backend_alike_and_never_retrains(tmp_path):
    """--quick: every backend, one shared recipe; a second invocation reuses the finished runs; a second
    seed through Ray gives a row its spread over seeds."""
    from benchmarks import comparison
    from tests.training.test_training import tensorboard_scalars
    argv = ["--quick", "--tiny", "--seeds", "0", "--levers", "base", "--work-dir", str(tmp_path / "runs"),
            "--out", "cmp", "--results", str(tmp_path)]
    comparison.main(argv)
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert [(r["backend"], r["seed"]) for r in data["runs"]] == [(b, 0) for b in registry.names()]
    for run in data["runs"]:  # the same recipe for all: only the backend and the seed differ
        words = run["command"].split()
        assert words[words.index("--model") + 1] == run["backend"] and words[words.index("--seed") + 1] == "0"
        assert " ".join(comparison.RECIPE) in run["command"]
    reports = sorted((tmp_path / "runs").rglob("report.json"))
    stamps = [p.stat().st_mtime_ns for p in reports]
    comparison.main(argv)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "runs").rglob("report.json"))] == stamps
    assert (tmp_path / "cmp.png").stat().st_size > 0
    # through Ray (a local instance): the missing seed trains in a Ray task, the finished run is reused
    comparison.main([*argv, "--engine", "ray", "--seeds", "0,1", "--backends", "memsizer"])
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert [(r["backend"], r["seed"]) for r in data["runs"]] == [("memsizer", 0), ("memsizer", 1)]
    assert [p.stat().st_mtime_ns for p in reports] == stamps
    row = data["table"][0]
    assert set(comparison.COLUMNS) <= set(row) and row["seeds"] == [0, 1]
    assert all(row[c]["min"] <= row[c]["median"] <= row[c]["max"] for c in comparison.COLUMNS)
    # every run's curve is in TensorBoard's event files, one point per evaluation
    for run_dir in (tmp_path / "runs" / "proxy").iterdir():
        report = json.loads((run_dir / "report.json").read_text())
        assert [s for s, _ in tensorboard_scalars(run_dir / "tensorboard")["held_out/worst_place"]] == [
            p["step"] for p in report["curve"]], run_dir


def test_a_failed_run_is_recorded_and_the_rest_of_the_grid_still_tabulated(tmp_path, monkeypatch):
    """A run whose training exits with an error (e.g. diverged) is listed as failed, the others make the
    table, the command exits non-zero, and the report says which runs failed."""
    import sys
    from benchmarks import comparison, report
    real = comparison.training_command

    def failing_for_the_transformer(backend, *rest):
        if backend == "transformer":
            return [sys.executable, "-c", "import sys; sys.exit('error: training diverged')"]
        return real(backend, *rest)

    monkeypatch.setattr(comparison, "training_command", failing_for_the_transformer)
    with pytest.raises(SystemExit) as stopped:
        comparison.main(["--quick", "--tiny", "--seeds", "0", "--levers", "base", "--backends", "transformer,memsizer",
                         "--work-dir", str(tmp_path / "runs"), "--out", "cmp", "--results", str(tmp_path)])
    assert stopped.value.code == 1
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert [r["backend"] for r in data["runs"]] == ["memsizer"] and [r["backend"] for r in data["table"]] == ["memsizer"]
    assert [(r["backend"], r["seed"], r["failed"]) for r in data["failed_runs"]] == [("transformer", 0, 1)]
    assert "training diverged" in Path(data["failed_runs"][0]["log"]).read_text()
    monkeypatch.setattr(report, "load", lambda name, folder=None: data)
    assert "1 of 2 planned runs finished (1 failed: Transformer base seed 0)" in report.comparison_table()
