"""Smoke tests: every benchmark script runs at a tiny size and writes its result (no timings asserted)."""
import argparse
import json
import time

import pytest
import torch

from benchmarks import (accuracy_levers, anchor_ctranslate2, decode_scaling, http_load, int8_kernels,
                        formulations, serving, shipped_accuracy, slim_memory, time_to_accuracy, train_throughput)
from models import registry
from training import train

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


def test_http_load_settings_name_workers_threads_batch_window_and_runtime():
    parse = http_load.parse_setting
    assert parse("w2t1b64") == http_load.ServerSetting(workers=2, torch_threads=1, batch_max=64, runtime="torch")
    assert parse("w2t1b64").recorded() == {"workers": 2, "torch_threads": 1, "batch_max": 64, "runtime": "torch"}
    assert parse("w2t1b64d2f+ctranslate2").recorded() == {
        "workers": 2, "torch_threads": 1, "batch_max": 64, "runtime": "ctranslate2", "batch_delay_ms": 2.0,
        "expect_callers": False}
    assert parse("w1t2b8d12.5").batch_delay_ms == 12.5 and parse("w1t2b8d12.5").expect_callers is True
    assert parse("w2t1b64k0r+ctranslate2").recorded() == {
        "workers": 2, "torch_threads": 1, "batch_max": 64, "runtime": "ctranslate2", "keepalive_s": 0,
        "reuse_port": True}
    assert not parse("w2t1b64d2k5").reuse_port
    assert parse("w2t1b64g").worker_class == "gthread"
    assert parse("w2t1b64k2a5+ctranslate2").accept_defer_ms == 5.0
    assert parse("w2t1b64k2+ctranslate2").accept_defer_ms is None
    env = parse("w1t2b8d12.5fk0+torch-int8").environment("cpu")
    assert env == {"PLACEVALUE_DEVICE": "cpu", "GUNICORN_WORKERS": "1", "PLACEVALUE_TORCH_THREADS": "2",
                   "PLACEVALUE_BATCH_MAX": "8", "PLACEVALUE_RUNTIME": "torch-int8", "PLACEVALUE_BATCH_DELAY_MS": "12.5",
                   "PLACEVALUE_BATCH_EXPECT_CALLERS": "false", "GUNICORN_KEEPALIVE": "0"}
    for bad in ("w2t1", "w2t1b64f", "w2t1b64d", "w2t1b64+", "w2t1b64k", "w2t1b64rk0", "w2t1b64gr", "w2t1b64a",
                "w2t1b64ga5", "w2t1b64a5g"):
        with pytest.raises(argparse.ArgumentTypeError):
            http_load.parse_setting(bad)


def test_serving_and_http_load_tiny(tmp_path, tiny_checkpoints):
    serving.main(["--checkpoints", str(tiny_checkpoints), "--questions", "4", "--batch-sizes", "2",
                  "--batch-repeats", "1", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "serving_cpu.json").read_text())["single_ms"]["memsizer"]["n"] == 4
    from tests.conftest import free_port
    http_load.main(["--checkpoints", str(tiny_checkpoints), "--concurrency", "1,2", "--requests", "6",
                    "--settings", "w1t1b1,w1t1b8d5f+ctranslate2", "--port", str(free_port()), "--ceiling-seconds", "0.3",
                    "--repeats", "2",
                    "--out", str(tmp_path)])
    settings = json.loads((tmp_path / "http_load_cpu.json").read_text())["settings"]
    assert list(settings) == ["w1t1b1", "w1t1b8d5f+ctranslate2"]
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
    assert settings["w1t1b1"]["levels"]["2"]["transformer"]["mean_pass_questions"] == 1
    assert settings["w1t1b8d5f+ctranslate2"]["runtime"] == "ctranslate2"
    # what served each backend, as the server's /models said
    assert settings["w1t1b8d5f+ctranslate2"]["served_runtimes"]["transformer"] == "ctranslate2"
    assert settings["w1t1b1"]["served_runtimes"]["memsizer"] == "torch"
    # torch computes on the pass thread; CTranslate2 on threads of its own, so it reports no share
    assert 0 < settings["w1t1b1"]["levels"]["2"]["transformer"]["pass_cpu_share"] <= 1.05
    assert settings["w1t1b8d5f+ctranslate2"]["levels"]["2"]["transformer"]["pass_cpu_share"] is None
    assert settings["w1t1b8d5f+ctranslate2"]["expect_callers"] is False
    # --interleave restarts each setting for every repeat; the rows are the same medians of all runs
    http_load.main(["--checkpoints", str(tiny_checkpoints), "--concurrency", "2", "--requests", "4",
                    "--settings", "w1t1b1,w1t1b8", "--port", str(free_port()), "--ceiling-seconds", "0.1",
                    "--repeats", "2", "--interleave", "--out", str(tmp_path / "interleaved")])
    interleaved = json.loads((tmp_path / "interleaved" / "http_load_cpu.json").read_text())["settings"]
    assert list(interleaved) == ["w1t1b1", "w1t1b8"]
    for setting in interleaved.values():
        assert setting["interleaved"] is True
        assert len(setting["levels"]["2"]["transformer"]["answers_per_second_runs"]) == 2
    # --merge re-measures one setting and keeps the other with the command that measured it
    http_load.main(["--checkpoints", str(tiny_checkpoints), "--concurrency", "1", "--requests", "2",
                    "--settings", "w1t1b1", "--port", str(free_port()), "--ceiling-seconds", "0.1", "--merge",
                    "--out", str(tmp_path)])
    merged = json.loads((tmp_path / "http_load_cpu.json").read_text())["settings"]
    assert set(merged) == {"w1t1b1", "w1t1b8d5f+ctranslate2"} and list(merged["w1t1b1"]["levels"]) == ["1"]
    assert "--merge" in merged["w1t1b1"]["measured"]["command"]
    assert "--merge" not in merged["w1t1b8d5f+ctranslate2"]["measured"]["command"]


def test_anchor_tiny(tmp_path, tiny_checkpoints):
    anchor_ctranslate2.main(["--checkpoints", str(tiny_checkpoints), "--questions", "6", "--timed", "2",
                             "--threads", "1", "--batch-sizes", "4", "--repeats", "1", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "anchor_ctranslate2_cpu.json").read_text())
    assert result["agreement"]["ctranslate2_float32_same_as_transformer"] == 6
    assert set(result["flops_per_question"]) == set(registry.names()) and min(result["flops_per_question"].values()) > 0
    # every backend also in torch int8 on the CPU, its answers counted against its float32 ones
    int8_paths = {name + "_torch_int8" for name in registry.names()}
    assert {"ctranslate2_float32", "ctranslate2_int8", *registry.names(), *int8_paths} == set(result["threads"]["1"])
    assert all(0 <= result["agreement"][f"{name}_same_as_{name[:-len('_torch_int8')]}"] <= 6 for name in int8_paths)


def test_int8_kernels_tiny(tmp_path, tiny_checkpoints):
    int8_kernels.main(["--checkpoints", str(tiny_checkpoints), "--questions", "8", "--threads", "1",
                       "--out", str(tmp_path)])
    result = json.loads((tmp_path / "int8_kernels_cpu.json").read_text())
    assert set(result["engine"]) == {"default", "mkl"}
    for engine in result["engine"].values():
        assert set(engine["rows"]) == {"float32", "int8"} and "int8" in engine["supported"]
        assert all(0 <= row["accuracy"] <= 1 and row["answers_per_second"] > 0 for row in engine["rows"].values())
    # float32 in the engine answers as torch does; the emulation's rounding is real (weights change)
    assert result["engine"]["default"]["rows"]["float32"]["accuracy"] == result["torch_emulation"]["float32"]
    assert int8_kernels.round_rows(torch.tensor([[1.0, 0.3333]])).tolist() != [[1.0, 0.3333]]


def test_formulations_tiny(tmp_path, tiny_checkpoints):
    formulations.main(["--checkpoints", str(tiny_checkpoints), "--questions", "12", "--batch-sizes", "1,3",
                       "--seconds", "0.05", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "formulations_cpu.json").read_text())
    assert set(result["backends"]) == {"memoryformer", "performer"}
    for row in result["backends"].values():
        assert set(row["batches"]) == {"1", "3"} and all(r["passes"] >= 3 for r in row["batches"].values())
        assert row["answers"]["questions"] == 12 and 0 <= row["answers"]["differing"] <= 12


@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_the_first_hash_formulation_is_the_same_function(weighting):
    from models.memoryformer import MemoryLayer
    layer = MemoryLayer(32, 8, tau=4, weighting=weighting)
    x = torch.randn(3, 5, 32)
    first, current = formulations.first_hash(layer, x), layer.hash(x)
    assert torch.equal(first.rows, current.rows) and first.shape == current.shape
    assert torch.allclose(first.weights, current.weights, rtol=1e-5)
    with formulations.first_formulation(torch.nn.Sequential(layer)):
        assert layer.hash.__func__ is formulations.first_hash
    assert layer.hash.__func__ is MemoryLayer.hash, "the block must restore the layer's own hash"


def test_the_first_performer_formulation_is_the_same_function():
    from models import performer
    from tests.conftest import tiny_config
    torch.manual_seed(0)
    attention = performer.PerformerAttention(tiny_config("performer"), "cross")
    k, v = torch.randn(2, 4, 6, 8) * 2, torch.randn(2, 4, 6, 8)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    for first, current in zip(formulations.first_source_sums(attention, k, v, pad), attention.source_sums(k, v, pad)):
        assert torch.allclose(first, current, rtol=1e-5, atol=1e-7)
    w = attention.projection
    assert torch.allclose(formulations.first_positive_features(k, w), performer.positive_features(k, w), rtol=1e-5)
    bound = performer.exponent_bound(w)
    assert torch.allclose(formulations.first_positive_features(k, w, bound),
                          performer.positive_features(k, w, bound), rtol=1e-5, atol=1e-12)
    current = performer.positive_features
    with formulations.first_formulation(torch.nn.Sequential(attention)):
        assert performer.positive_features is formulations.first_positive_features
        assert attention.source_sums.__func__ is formulations.first_source_sums
    assert performer.positive_features is current and attention.source_sums.__func__ is type(attention).source_sums


def test_time_to_accuracy_tiny(tmp_path):
    time_to_accuracy.main(["--variants", "default", "--max-steps", "4", "--eval-every", "2", "--eval-size", "5",
                           "--device", "cpu", "--name", "tta", "--out", str(tmp_path), "--",
                           "--d-model", "32", "--d-ff", "64", "--n-heads", "4", "--n-encoder-layers", "1", 
                           "--n-decoder-layers", "1"])
    runs = json.loads((tmp_path / "tta.json").read_text())["runs"]
    assert [r["backend"] for r in runs] == list(registry.names()) and len(runs[0]["curve"]) == 2


def test_time_to_accuracy_lever_study_over_seeds_resumes_from_its_work_dir(tmp_path):
    tiny = ["--d-model", "32", "--d-ff", "64", "--n-heads", "4", "--n-encoder-layers", "1", "--n-decoder-layers", "1"]
    study = ["--variants", "default,label-smoothing", "--seeds", "0,1", "--backends", "memsizer", "--jobs", "2",
             "--max-steps", "4", "--eval-every", "2", "--eval-size", "5", "--target", "0", "--device", "cpu",
             "--work-dir", str(tmp_path / "runs"), "--name", "study", "--out", str(tmp_path), "--", *tiny]
    time_to_accuracy.main(study)
    result = json.loads((tmp_path / "study.json").read_text())
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [("default", 0), ("default", 1),
                                                                    ("label-smoothing", 0), ("label-smoothing", 1)]
    assert "--label-smoothing 0.1" in result["runs"][2]["command"] and "--threads 1" in result["runs"][0]["command"]
    assert [(row["variant"], row["seeds"], row["median_steps"], row["reached"]) for row in result["levers"]] == [
        ("default", [0, 1], 2, 2), ("label-smoothing", [0, 1], 2, 2)]
    assert result["variant_options"] == {"default": [], "label-smoothing": ["--label-smoothing", "0.1"]}
    assert (tmp_path / "study.png").stat().st_size > 0
    reports = sorted((tmp_path / "runs").glob("*/report.json"))
    assert len(reports) == 4
    stamps = [p.stat().st_mtime_ns for p in reports]
    time_to_accuracy.main(study)  # everything finished: nothing is trained again
    assert [p.stat().st_mtime_ns for p in reports] == stamps
    with pytest.raises(SystemExit):
        time_to_accuracy.main(["--variants", "default,warp-speed", "--out", str(tmp_path)])


def test_accuracy_levers_skips_what_a_backend_cannot_train_and_merges_later_invocations(tmp_path):
    tiny = ["--d-model", "32", "--d-ff", "64", "--n-heads", "4", "--n-encoder-layers", "1", "--n-decoder-layers", "1",
            "--threads", "1"]
    common = ["--seeds", "0", "--max-steps", "2", "--eval-every", "2", "--eval-per-place", "1", "--per-place", "2",
              "--size", "5", "--device", "cpu", "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path),
              "--name", "levers"]
    # rotary positions need query-key scores: MemSizer's run of that variant is left out, not failed
    accuracy_levers.main(["--backends", "memsizer", "--variants", "baseline,rope", *common, "--", *tiny])
    first = json.loads((tmp_path / "levers.json").read_text())
    assert [(r["backend"], r["variant"]) for r in first["runs"]] == [("memsizer", "baseline")]
    accuracy_levers.main(["--backends", "transformer", "--variants", "rope", "--merge", *common, "--", *tiny])
    merged = json.loads((tmp_path / "levers.json").read_text())
    assert {(r["backend"], r["variant"]) for r in merged["runs"]} == {("memsizer", "baseline"), ("transformer", "rope")}
    assert [(row["backend"], row["variant"]) for row in merged["levers"]] == [("transformer", "rope"),
                                                                               ("memsizer", "baseline")]
    assert len(merged["commands"]) == 2 and "--merge" in merged["commands"][1]
    assert set(merged["variant_options"]) == {"baseline", "rope"}
    # measured once: a later invocation reuses the stored scores of the same weights on the same sets
    stored = tmp_path / "runs" / "transformer-rope-0" / "final_scores.json"
    stamp = stored.stat().st_mtime_ns
    accuracy_levers.main(["--backends", "transformer", "--variants", "rope", "--merge", *common, "--", *tiny])
    assert stored.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "levers.json").read_text())["runs"] == merged["runs"]
    with pytest.raises(SystemExit):  # another step budget is not comparable: refused before training
        accuracy_levers.main(["--backends", "transformer", "--variants", "abacus", "--merge", *common[:-2],
                              "--name", "levers", "--max-steps", "3", "--", *tiny])
    assert not (tmp_path / "runs" / "transformer-abacus-0").exists()


def test_time_to_accuracy_summarizes_finished_runs(tmp_path):
    tiny = ["--d-model", "32", "--d-ff", "64", "--n-heads", "4", "--n-encoder-layers", "1", "--n-decoder-layers", "1",
            "--max-steps", "4", "--eval-every", "2", "--eval-size", "5", "--threads", "1"]
    for backend in ("transformer", "memsizer"):
        train.main(["--model", backend, *tiny, "--out", str(tmp_path / backend / "ckpt"),
                    "--run-dir", str(tmp_path / backend)])
    time_to_accuracy.main(["--from-runs", f"memsizer:bucketed={tmp_path / 'memsizer'}", f"transformer={tmp_path / 'transformer'}",
                           "--target", "0", "--note", "shared cores", "--name", "done", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "done.json").read_text())
    assert [(r["backend"], r["variant"]) for r in result["runs"]] == [("memsizer", "bucketed"), ("transformer", "default")]
    assert result["note"] == "shared cores"
    assert all(r["steps_to_target"] == 2 and r["command"].startswith("python -m training.train") for r in result["runs"])
    assert (tmp_path / "done.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        time_to_accuracy.main(["--from-runs", "softmax=runs/x", "--out", str(tmp_path)])


def test_training_levers_tiny(tmp_path):
    # torch.compile is left out: compiling takes minutes here, longer than the rest of the suite's file
    levers = "baseline: fp32 batch 64,batch 128,batch 256 as 4 x 64 accumulated,length buckets (pool of 8 batches)"
    train_throughput.main(["--tiny", "--steps", "2", "--warmup", "0", "--device", "cpu", "--levers", levers,
                           "--out", str(tmp_path), "--name", "subset"])
    data = json.loads((tmp_path / "subset.json").read_text())
    assert [r["lever"] for r in data["levers"]] == levers.split(",")
    assert all(r[n] > 0 for r in data["levers"] for n in ("transformer", "memsizer"))
    assert 0 < data["padding_share_batch64_bucketed"] < 0.5 * data["padding_share_batch64"] < 0.25


def test_results_md_is_generated_from_the_committed_result_files():
    """RESULTS.md is an output: edit INTRO.md / ANALYSIS.md or the JSON, then run benchmarks.report."""
    from benchmarks import report
    assert (report.ROOT / "benchmarks" / "RESULTS.md").read_text() == report.render(), \
        "benchmarks/RESULTS.md is stale: run python -m benchmarks.report"


def test_slim_memory_tiny(tmp_path):
    slim_memory.main(["--tiny", "--lengths", "32,64", "--layers", "1", "--slim-slices", "4,64", "--device", "cpu",
                      "--out", str(tmp_path)])
    data = json.loads((tmp_path / "slim_memory_cpu_tiny.json").read_text())
    assert list(data["variants"]) == [*registry.names(), "performer+slim4", "performer+slim64"]
    for rows in data["variants"].values():
        assert [r["length"] for r in rows] == [32, 64]
        assert all(r["peak_bytes"] >= 0 and r["seconds_per_step"] > 0 for r in rows)
    assert (tmp_path / "slim_memory_cpu_tiny.png").stat().st_size > 0


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
    assert (tmp_path / "shipped_accuracy.png").stat().st_size > 10_000


def test_http_load_counts_the_connections_each_worker_holds(tiny_checkpoints):
    from tests.conftest import free_port
    process, url = http_load.start_server(free_port(), http_load.parse_setting("w2t1b8"), str(tiny_checkpoints))
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
