"""training.promote: a candidate replaces the shipped checkpoint only when its stored files are better."""
import json

import pytest

from conftest import tiny_model
from models.checkpoint import read_config, save_checkpoint, write_json
from models.task import generate, generate_beyond_digits, generate_per_place
from models.tokenizer import Tokenizer
from training import promote


def record(correct: int, total: int, per_place: dict | None = None) -> dict:
    return {"correct": correct, "total": total, "accuracy": correct / total,
            "per_place": per_place or {"units": {"correct": correct, "total": total, "accuracy": correct / total}}}


def records(trained_worst=1.0, extrapolate=(8500, 10000), beyond=(50, 1000)) -> dict:
    return {promote.TRAINED_PLACES: record(1000, 1000, {"units": {"accuracy": 1.0}, "billions": {"accuracy": trained_worst}}),
            "extrapolate_10k_seed778": record(*extrapolate), "beyond_1k_seed781": record(*beyond)}


def test_the_rule_wants_every_trained_place_and_a_gain_beyond_sampling_error_with_no_loss():
    shipped = records()
    promoted, reasons = promote.judge(records(beyond=(995, 1000)), shipped)
    assert promoted and "beyond_1k_seed781: 99.50%" in reasons[2] and reasons[2].endswith("better")
    assert "within sampling error" in reasons[1]
    # 12-digit 2 points lower on 10,000 questions each: the intervals part, worse, kept
    assert not promote.judge(records(extrapolate=(8300, 10000), beyond=(995, 1000)), shipped)[0]
    # a trained place under 99.9% is never shipped, whatever else it gains
    promoted, reasons = promote.judge(records(trained_worst=0.998, beyond=(995, 1000)), shipped)
    assert not promoted and reasons[0] == "worst trained place billions 99.80% (below 99.9%)"
    # no gain beyond sampling error anywhere: the shipped checkpoint stays
    assert not promote.judge(records(extrapolate=(8530, 10000), beyond=(60, 1000)), shipped)[0]


SMALL_SETS = {  # the CLI's record names and splits, a few questions each
    promote.TRAINED_PLACES: ("train", "train/q.txt", lambda: generate_per_place("train", 2, 1)),
    "interpolate_10k_seed777": ("interpolate", "interpolate/q.txt", lambda: generate("interpolate", 8, 2)),
    "extrapolate_10k_seed778": ("extrapolate", "extrapolate/q.txt", lambda: generate("extrapolate", 8, 3)),
    "beyond_1k_seed781": ("beyond", "beyond/q.txt", lambda: generate_beyond_digits("train", 8, 4)),
}


def checkpoint(path, seed):
    save_checkpoint(tiny_model("memsizer", seed=seed), path, Tokenizer(), "float32")
    return path


def test_records_are_measured_on_the_stored_files_and_reused_for_the_same_weights(tmp_path, monkeypatch):
    directory = checkpoint(tmp_path / "c", 0)
    results = promote.evaluate_checkpoint(directory, tmp_path / "data", SMALL_SETS)
    config = read_config(directory)
    assert set(results) == set(SMALL_SETS) and results == {n: config["evaluation"][n] for n in SMALL_SETS}
    beyond = results["beyond_1k_seed781"]
    assert beyond["split"] == "beyond" and beyond["total"] == 8 and beyond["runtime"] == "torch"
    assert beyond["weights_sha256"] == config["weights"]["sha256"] and beyond["data"] == str(tmp_path / "data" / "beyond")
    monkeypatch.setattr(promote, "evaluate_examples", lambda *a, **k: pytest.fail("measured twice"))
    assert promote.evaluate_checkpoint(directory, tmp_path / "data", SMALL_SETS) == results
    # new weights under the same name: the old records no longer count
    save_checkpoint(tiny_model("memsizer", seed=1), directory, Tokenizer(), "float32", extra={"evaluation": config["evaluation"]})
    with pytest.raises(pytest.fail.Exception, match="measured twice"):
        promote.evaluate_checkpoint(directory, tmp_path / "data", SMALL_SETS)


def test_the_cli_replaces_only_a_better_candidate_and_dry_run_changes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(promote, "EVALUATION_SETS", SMALL_SETS)
    shipped, candidate = checkpoint(tmp_path / "shipped", 0), checkpoint(tmp_path / "candidate", 1)
    data = ["--data-dir", str(tmp_path / "data")]
    promote.main(["--candidate", str(candidate), "--shipped", str(shipped), *data])
    assert "memsizer: kept" in capsys.readouterr().out  # untrained: no place is at 99.9%
    shipped_sha = read_config(shipped)["weights"]["sha256"]
    # give the candidate records of a better model, stored for its own weights (so they are reused)
    config = read_config(candidate)
    sha = config["weights"]["sha256"]
    config["evaluation"] = {name: {**rec, "weights_sha256": sha, "runtime": "torch"} for name, rec in records(
        extrapolate=(8, 8), beyond=(8, 8)).items()} | {"interpolate_10k_seed777": {
            **record(8, 8), "weights_sha256": sha, "runtime": "torch"}}
    write_json(candidate / "config.json", config)
    shipped_config = read_config(shipped)
    for name in promote.COMPARED:  # the shipped one answered none of them
        shipped_config["evaluation"][name].update(correct=0, accuracy=0.0, total=8)
    write_json(shipped / "config.json", shipped_config)
    promote.main(["--candidate", str(candidate), "--shipped", str(shipped), "--dry-run", *data])
    assert "would replace" in capsys.readouterr().out and read_config(shipped)["weights"]["sha256"] == shipped_sha
    log = tmp_path / "judged.json"
    promote.main(["--candidate", str(candidate), "--shipped", str(shipped), "--log", str(log), *data])
    assert "memsizer: replaced" in capsys.readouterr().out
    assert read_config(shipped)["weights"]["sha256"] == sha
    [entry] = json.loads(log.read_text())["judgements"]
    assert entry["verdict"] == "replaced" and entry["candidate"]["weights_sha256"] == sha
    assert entry["shipped"]["weights_sha256"] == shipped_sha  # the one it was judged against
    assert entry["candidate"]["records"]["beyond_1k_seed781"] == {"accuracy": 1.0, "correct": 8, "total": 8,
                                                                  "worst_place": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candidate", "data", "judged.json", "shipped"]
    assert json.loads((shipped / "config.json").read_text())["evaluation"]["beyond_1k_seed781"]["accuracy"] == 1.0


def test_the_cli_refuses_a_candidate_of_another_backend(tmp_path):
    save_checkpoint(tiny_model("performer"), tmp_path / "p", Tokenizer(), "float32")
    checkpoint(tmp_path / "m", 0)
    with pytest.raises(SystemExit, match="holds a memsizer model, the candidate a performer"):
        promote.main(["--candidate", str(tmp_path / "p"), "--shipped", str(tmp_path / "m")])
