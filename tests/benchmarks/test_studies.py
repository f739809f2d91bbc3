"""Smoke tests: every one-off study (benchmarks/studies) still runs at a tiny size."""
import json

import pytest
import torch

from benchmarks.studies import accuracy_levers, anchor_ctranslate2, formulations, int8_kernels, time_to_accuracy
from models import registry
from training import train

pytestmark = pytest.mark.slow


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
