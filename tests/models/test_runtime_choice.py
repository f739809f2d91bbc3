"""RUNTIME=auto: int8 only where this CPU's int8 kernel class has stored evaluations that keep every
in-distribution place, and the page's reliability from the records of that class."""
import copy
import json
from pathlib import Path

import pytest

import models.runtimes
from serving.catalog import per_place_reliability
from serving.service import QAService
from models.runtimes import int8_keeps_accuracy
from models.runtimes.cpu import int8_kernel

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "transformer" / "config.json"
# the records an earlier shipped Transformer carried: CTranslate2 int8 measured on a VNNI host (every place
# kept) and on an AVX2-only host (interpolate 90.18%), beside float32 records of the same files
TWO_KERNELS = Path(__file__).resolve().parent / "fixtures" / "two_kernel_int8_records.json"


@pytest.mark.parametrize("flags, kernel", [
    (["avx2", "avx512f", "avx512_vnni"], "vnni"), (["avx2", "avx_vnni"], "vnni"), (["amx_int8"], "vnni"),
    (["avx2", "avx512f"], "avx2"), (["avx2"], "avx2"), ([], "other")])
def test_the_int8_kernel_class_follows_the_dot_product_flags(flags, kernel):
    assert int8_kernel(flags) == kernel


def test_the_shipped_transformer_keeps_its_accuracy_in_int8_on_vnni_only():
    config = json.loads(SHIPPED.read_text())
    keeps, why = int8_keeps_accuracy(config, "vnni")
    assert keeps, why
    for kernel in ("avx2", "other"):  # measured on no such host: float32 there
        keeps, why = int8_keeps_accuracy(config, kernel)
        assert not keeps and "no ctranslate2-int8 evaluation" in why
    keeps, why = int8_keeps_accuracy(json.loads(TWO_KERNELS.read_text()), "avx2")  # interpolate 90.18% there
    assert not keeps and "in int8 against" in why


def test_int8_records_of_other_weights_or_with_a_weaker_place_do_not_count():
    config = json.loads(TWO_KERNELS.read_text())
    other_weights = copy.deepcopy(config)
    other_weights["weights"]["sha256"] = "0" * 64  # every stored record now describes other weights
    assert not int8_keeps_accuracy(other_weights, "vnni")[0]
    weaker = copy.deepcopy(config)
    tens = weaker["evaluation"]["train_per_place_1000_seed780_ctranslate2_int8_vnni"]["per_place"]["tens"]
    tens["accuracy"] = 0.999
    keeps, why = int8_keeps_accuracy(weaker, "vnni")
    assert not keeps and "tens" in why


def test_reliability_shows_the_int8_records_of_the_cpu_it_serves_on():
    evaluation = json.loads(TWO_KERNELS.read_text())["evaluation"]
    here = per_place_reliability(evaluation, "ctranslate2-int8", "vnni")
    assert here["interpolate"]["evaluation"] == "interpolate_10k_seed777_ctranslate2_int8_vnni"
    assert here["interpolate"]["int8_kernel"] == "vnni" and here["interpolate"]["accuracy"] == 1.0
    avx2 = per_place_reliability(evaluation, "ctranslate2-int8", "avx2")
    assert avx2["interpolate"]["evaluation"] == "interpolate_10k_seed777_ctranslate2_int8"
    assert avx2["interpolate"]["accuracy"] < 0.95
    # a class nothing was measured on still shows int8 records, and names the class they came from
    other = per_place_reliability(evaluation, "ctranslate2-int8", "other")["interpolate"]
    assert other["runtime"] == "ctranslate2-int8" and other["int8_kernel"] in ("vnni", "avx2")


def evaluation_records(sha256: str, int8_tens: float, int8_runtime: str = "ctranslate2-int8") -> dict:
    def record(split, data, runtime, accuracy, kernel=None):
        row = {"split": split, "data": data, "accuracy": accuracy, "correct": int(accuracy * 100), "total": 100,
               "weights_sha256": sha256, "runtime": runtime,
               "per_place": {"tens": {"correct": int(accuracy * 100), "total": 100, "accuracy": accuracy}}}
        return {**row, "int8_kernel": kernel} if kernel else row
    return {"interpolate_fp32": record("interpolate", "data/interpolate", "ctranslate2", 1.0),
            "train_fp32": record("train", "data/train", "torch", 1.0),
            "interpolate_int8": record("interpolate", "data/interpolate", int8_runtime, 1.0, "vnni"),
            "train_int8": record("train", "data/train", int8_runtime, int8_tens, "vnni")}


@pytest.mark.parametrize("kernel, int8_tens, served", [
    ("vnni", 1.0, "ctranslate2-int8"),  # measured on this class and nothing lost
    ("avx2", 1.0, "ctranslate2"),  # nothing measured on this class
    ("vnni", 0.98, "ctranslate2")])  # a place lost in int8
def test_auto_serves_int8_only_where_its_stored_evaluations_allow(tmp_path, monkeypatch, kernel, int8_tens, served):
    from models.checkpoint import save_checkpoint
    from models.tokenizer import Tokenizer
    from tests.conftest import tiny_model
    directory = tmp_path / "transformer"
    save_checkpoint(tiny_model("transformer"), directory, Tokenizer(), "float32")
    config = json.loads((directory / "config.json").read_text())
    config["evaluation"] = evaluation_records(config["weights"]["sha256"], int8_tens)
    (directory / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(models.runtimes, "int8_kernel", lambda: kernel)
    service = QAService(tmp_path, required=["transformer"], batching={"max_delay_ms": 0}, runtime="auto")
    try:
        assert service.runtimes["transformer"] == served
        row = {r["name"]: r for r in service.describe()}["transformer"]
        assert row["runtime"] == served
        assert len(service.answer(["What is the tens digit of 1234?"], "transformer")[0]) == 1
    finally:
        service.batcher.close()


def saved_with_records(directory, backend: str, evaluation) -> None:
    from models.checkpoint import save_checkpoint
    from models.tokenizer import Tokenizer
    from tests.conftest import tiny_model
    save_checkpoint(tiny_model(backend), directory, Tokenizer(), "float32")
    config = json.loads((directory / "config.json").read_text())
    config["evaluation"] = evaluation(config["weights"]["sha256"])
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("kernel, int8_tens, served", [
    ("vnni", 1.0, "torch-int8"), ("avx2", 1.0, "torch"), ("vnni", 0.98, "torch")])
def test_auto_serves_torch_int8_where_its_stored_evaluations_allow(tmp_path, monkeypatch, kernel, int8_tens, served):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    saved_with_records(tmp_path / "memsizer", "memsizer",
                       lambda sha256: evaluation_records(sha256, int8_tens, "torch-int8"))
    monkeypatch.setattr(models.runtimes, "int8_kernel", lambda: kernel)
    service = QAService(tmp_path, required=["memsizer"], batching={"max_delay_ms": 0}, runtime="auto")
    try:
        assert service.runtimes["memsizer"] == served
        quantized = any(isinstance(m, DynamicInt8Linear) for m in service.runners["memsizer"].model.modules())
        assert quantized == (served == "torch-int8")
        assert {r["name"]: r for r in service.describe()}["memsizer"]["runtime"] == served
        assert len(service.answer(["What is the tens digit of 1234?"], "memsizer")[0]) == 1
    finally:
        service.batcher.close()


@pytest.mark.parametrize("int8_runtimes, served", [
    (("ctranslate2-int8", "torch-int8"), "ctranslate2-int8"),  # both earned: the faster engine
    (("torch-int8",), "torch-int8"),  # torch int8 before CTranslate2 float32
    ((), "ctranslate2")])
def test_auto_prefers_the_fastest_runtime_a_backend_has_earned(tmp_path, monkeypatch, int8_runtimes, served):
    def evaluation(sha256):
        records = evaluation_records(sha256, 1.0)
        records = {k: v for k, v in records.items() if not k.endswith("int8")}
        for runtime in int8_runtimes:
            records.update({f"{k}_{runtime}": v for k, v in evaluation_records(sha256, 1.0, runtime).items()
                            if k.endswith("int8")})
        return records
    saved_with_records(tmp_path / "transformer", "transformer", evaluation)
    monkeypatch.setattr(models.runtimes, "int8_kernel", lambda: "vnni")
    service = QAService(tmp_path, required=["transformer"], batching={"max_delay_ms": 0}, runtime="auto")
    try:
        assert service.runtimes["transformer"] == served
    finally:
        service.batcher.close()
