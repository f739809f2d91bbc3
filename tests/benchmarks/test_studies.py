"""Smoke tests: every one-off study (benchmarks/studies) still runs at a tiny size."""
import json

import pytest
import torch

from benchmarks.studies import anchor_ctranslate2, formulations, int8_kernels
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
