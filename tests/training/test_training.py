"""The train and evaluate CLIs end to end on tiny configs (CPU)."""
import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from models import registry
from models.checkpoint import load_checkpoint
from training import data, evaluate, recipe, train
from models.task import generate
from training.curves import SCALARS
from training.data import write_examples

TINY = ["--d-model", "64", "--d-ff", "256", "--n-heads", "4", "--n-encoder-layers", "2", "--n-decoder-layers", "1",
        "--threads", "1", "--eval-size", "200", "--save-every-minutes", "0.5", "--performer-features", "32"]


def run_train(tmp_path, model, *extra, name="run"):
    out, run_dir = tmp_path / name / "checkpoint", tmp_path / name / "state"
    train.main(["--model", model, *TINY, "--out", str(out), "--run-dir", str(run_dir), *extra])
    return out, run_dir, json.loads((run_dir / "report.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("model", registry.names())
def test_default_recipe_learns_a_tiny_config(tmp_path, model):
    """Regression guard: the CLI's defaults (positions, init, warmup, schedule) still learn, every
    place name of the split included (a change that stopped teaching one place fails here)."""
    out, _, report = run_train(tmp_path, model, "--lr", "3e-3", "--warmup-steps", "50", "--max-steps", "600",
                               "--eval-every", "300", "--split", "train-easy", "--eval-split", "train-easy",
                               "--eval-per-place", "100")
    # chance is 10%; always answering the most frequent digit per place gives under 30%
    assert report["final_accuracy"] >= 0.4, report["curve"]
    per_place = report["final_evaluation"]["per_place"]
    assert list(per_place) == ["units", "tens", "hundreds", "thousands", "ten thousands", "hundred thousands"]
    # measured at 600 steps: worst places 0.33 (Transformer) to 0.98; a place never taught stays near chance
    assert min(r["accuracy"] for r in per_place.values()) >= 0.2, per_place
    assert report["curve"][-1]["step"] == 600 and report["provenance"]["examples_seen"] == 600 * 64
    config = json.loads((out / "config.json").read_text())
    assert config["evaluation"]["held_out_train-easy"]["accuracy"] == report["final_accuracy"]
    assert config["provenance"]["command"].startswith("python -m training.train --model")


def test_stopping_on_the_worst_place_of_a_per_place_held_out_set(tmp_path):
    """--eval-per-place measures every place equally; --target-metric worst-place judges the lowest one."""
    out, _, report = run_train(tmp_path, "memsizer", "--max-steps", "4", "--eval-every", "2", "--eval-split", "train",
                               "--eval-per-place", "3", "--target-metric", "worst-place", "--target-accuracy", "0.0",
                               "--group-size", "16")
    assert report["curve"][-1]["step"] == 2, "a target of 0 is met at the first evaluation"
    with safe_open(out / "model.safetensors", "pt") as stored:  # the default int4, in the groups asked for
        assert stored.metadata()["format"] == "int4" and stored.metadata()["group_size"] == "16"
    final = report["final_evaluation"]
    assert final["total"] == 3 * len(final["per_place"]) and "billions" in final["per_place"]
    point = report["curve"][0]
    assert point["eval_worst_place"] <= point["eval_accuracy"], "the minimum never exceeds the mean"
    assert train.worst_place({"accuracy": 0.9, "per_place": {"units": {"accuracy": 1.0}, "billions": {"accuracy": 0.5}}}) == 0.5


@pytest.mark.parametrize("data_order", [[], ["--bucket-pool", "3"], ["--curriculum-steps", "3", "--label-smoothing", "0.1"]],
                         ids=["plain", "bucketed", "curriculum"])
def test_resume_continues_exactly_where_it_stopped(tmp_path, data_order):
    """Bucketed: step 8 is in the middle of a pool, which the resumed run must rebuild.
    Curriculum: the run stops in the hard phase and resumes into the full split."""
    common = ["--lr", "1e-3", "--warmup-steps", "5", "--schedule", "constant", "--eval-every", "1000",
              "--dropout", "0", "--weights-format", "float32", "--eval-size", "20", *data_order]
    straight, _, _ = run_train(tmp_path, "memsizer", *common, "--max-steps", "16", name="straight")
    _, state, first = run_train(tmp_path, "memsizer", *common, "--max-steps", "8", name="resumed")
    assert first["provenance"]["steps"] == 8
    data._length_sorted_pool.cache_clear()  # as in a fresh process
    resumed, _, second = run_train(tmp_path, "memsizer", *common, "--max-steps", "16", "--resume", name="resumed")
    assert second["provenance"]["steps"] == 16 and second["provenance"]["examples_seen"] == 16 * 64
    want, got = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.allclose(want[key], got[key], atol=1e-6), key


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_its_last_finite_state(tmp_path, monkeypatch, capsys):
    """Gradients poisoned with NaN in the step from 5 to 6 (as an overflow would): the run stops at its next
    sync point (step 8) with an error naming the step, instead of spending its budget on NaN; it writes no
    checkpoint and leaves the state of step 5, which resumes and finishes once the cause is gone."""
    real = train.micro_batches

    def poisoned(run, step, split):
        result = real(run, step, split)
        if step == 5:
            for parameter in run.model.parameters():
                if parameter.grad is not None:
                    parameter.grad.fill_(float("nan"))
        return result

    monkeypatch.setattr(train, "micro_batches", poisoned)
    common = ["--lr", "1e-3", "--warmup-steps", "2", "--eval-every", "4", "--eval-size", "10", "--max-steps", "12",
              "--weights-format", "float32", "--d-model", "32", "--d-ff", "64", "--save-every-minutes", "0"]
    with pytest.raises(SystemExit, match=r"training diverged: the loss is nan by step 8; .* finite weights of step 5"):
        run_train(tmp_path, "memsizer", *common)
    out, run_dir = tmp_path / "run" / "checkpoint", tmp_path / "run" / "state"
    assert not (out / "model.safetensors").exists() and not (run_dir / "report.json").exists()
    assert json.loads((run_dir / "train_state.json").read_text())["step"] == 5
    assert all(torch.isfinite(t).all() for t in load_file(run_dir / "train_state.safetensors").values())
    monkeypatch.undo()
    _, _, report = run_train(tmp_path, "memsizer", *common, "--resume")
    assert report["provenance"]["steps"] == 12 and math.isfinite(report["curve"][-1]["loss"])


def test_resume_continues_the_moving_average_loss_of_the_curve(tmp_path):
    """The curve's loss is an average over sampled steps (every 20th); a resumed run continues it
    instead of restarting from one step's loss."""
    common = ["--lr", "1e-3", "--warmup-steps", "5", "--schedule", "constant", "--eval-every", "20", "--eval-size", "10",
              "--weights-format", "float32", "--d-model", "32", "--d-ff", "64"]
    _, _, whole = run_train(tmp_path, "memsizer", *common, "--max-steps", "60", name="straight")
    run_train(tmp_path, "memsizer", *common, "--max-steps", "40", name="resumed")
    _, _, resumed = run_train(tmp_path, "memsizer", *common, "--max-steps", "60", "--resume", name="resumed")
    assert [p["step"] for p in resumed["curve"]] == [20, 40, 60]
    for want, got in zip(whole["curve"], resumed["curve"]):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"], abs=1e-6)
    # the TensorBoard view of the curve, written across both processes, is the report's curve
    events = tensorboard_scalars(tmp_path / "resumed" / "state" / "tensorboard")
    for key, tag in SCALARS.items():
        assert events[tag] == [(p["step"], pytest.approx(p[key], rel=1e-6)) for p in resumed["curve"]], tag


def tensorboard_scalars(folder) -> dict:
    """tag -> [(step, value)] from a folder's event files (TFRecord framing: length, its CRC, the
    event, its CRC), honouring a resumed writer's purge of the steps from its start on, as TensorBoard does."""
    import struct
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    scalars = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return {tag: sorted(points) for tag, points in scalars.items()}


def test_gradient_accumulation_equals_one_big_batch(tmp_path, monkeypatch):
    """Two micro-batches of 8 make the same update as one batch of the same 16 examples (every
    answer is one digit + end, so per-micro-batch token means average to the big batch's mean)."""
    examples = generate("train", 16 * 3, seed=11)
    monkeypatch.setattr(train, "training_batch",
                        lambda seed, rank, index, size, split, balanced_share, beyond_share: examples[index * size:(index + 1) * size])
    common = ["--max-steps", "3", "--eval-every", "1000", "--eval-size", "10", "--dropout", "0",
              "--weights-format", "float32", "--lr", "1e-3", "--warmup-steps", "1"]
    big, _, one = run_train(tmp_path, "memsizer", *common, "--batch-size", "16", name="big")
    accumulated, _, two = run_train(tmp_path, "memsizer", *common, "--batch-size", "8", "--grad-accum", "2",
                                    name="accumulated")
    assert one["provenance"]["examples_seen"] == two["provenance"]["examples_seen"] == 3 * 16
    want, got = load_file(big / "model.safetensors"), load_file(accumulated / "model.safetensors")
    for key in want:
        assert torch.allclose(want[key], got[key], atol=1e-5), key
    small, _, _ = run_train(tmp_path, "memsizer", *common, "--batch-size", "8", name="small")
    other = load_file(small / "model.safetensors")  # the comparison can tell different updates apart
    assert any(not torch.allclose(want[key], other[key], atol=1e-5) for key in want)


def test_label_smoothing_and_curriculum_are_recorded_and_change_training(tmp_path):
    common = ["--max-steps", "6", "--eval-every", "1000", "--eval-size", "10", "--dropout", "0"]
    _, _, plain = run_train(tmp_path, "transformer", *common, name="plain")
    _, _, smoothed = run_train(tmp_path, "transformer", *common, "--label-smoothing", "0.2", name="smoothed")
    _, _, staged = run_train(tmp_path, "transformer", *common, "--curriculum-steps", "2", name="staged")
    assert smoothed["provenance"]["recipe"]["label_smoothing"] == 0.2
    assert staged["provenance"]["recipe"]["curriculum_steps"] == 2
    assert plain["weights_sha256"] != smoothed["weights_sha256"] != staged["weights_sha256"] != plain["weights_sha256"]


def test_label_smoothing_loss_is_the_smoothed_cross_entropy_over_answer_tokens():
    """(1 - e) * NLL of the target + e * mean NLL over the vocabulary, padding excluded."""
    from models.config import ModelConfig
    from models.seq2seq import Seq2Seq
    from models.tokenizer import PAD, Tokenizer
    tokenizer = Tokenizer()
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(backend="transformer", vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64,
                                n_heads=2, n_encoder_layers=1, n_decoder_layers=1, dropout=0.0)).eval()
    examples = [("What is the units digit of 5?", "5"), ("What is the tens digit of 1234567?", "6")]
    src, tgt_in, tgt_out = train.make_batch(examples, tokenizer, torch.device("cpu"))
    with torch.no_grad():
        logits, plain = model(src, tgt_in, tgt_out)
        _, smoothed = model(src, tgt_in, tgt_out, label_smoothing=0.1)
    log_p = logits.float().log_softmax(-1)[tgt_out != PAD]
    nll = -log_p.gather(1, tgt_out[tgt_out != PAD][:, None]).mean()
    assert plain.item() == pytest.approx(nll.item(), rel=1e-5)
    assert smoothed.item() == pytest.approx((0.9 * nll - 0.1 * log_p.mean(-1).mean()).item(), rel=1e-5)


@pytest.mark.parametrize("flag", [["--curriculum-steps", "-1"], ["--label-smoothing", "1.0"], ["--bucket-pool", "0"],
                                  ["--grad-accum", "0"], ["--group-size", "0"]])
def test_bad_recipe_options_are_rejected(flag, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "memsizer", *flag])
    assert "must be" in capsys.readouterr().err


def test_resume_without_state_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="holds no training state"):
        train.main(["--model", "transformer", "--resume", "--run-dir", str(tmp_path / "none")])


def test_init_from_starts_at_the_checkpoints_weights_with_its_architecture(tmp_path, capsys):
    """--init-from: the stored weights are where training starts (lr 0 leaves them unchanged), the
    architecture defaults to the checkpoint's, and the provenance chains to the parent's."""
    parent, _, first = run_train(tmp_path, "memsizer", "--max-steps", "3", "--eval-every", "1000",
                                 "--weights-format", "float32", "--memsizer-k", "8", name="parent")
    child, child_state = tmp_path / "child" / "checkpoint", tmp_path / "child" / "state"
    train.main(["--model", "memsizer", "--init-from", str(parent), "--lr", "0", "--warmup-steps", "0",
                "--schedule", "constant", "--max-steps", "2", "--eval-every", "1000", "--eval-size", "20",
                "--threads", "1", "--weights-format", "float32", "--beyond-share", "0.1", "--dropout", "0.1",
                "--out", str(child), "--run-dir", str(child_state)])
    want, got = load_file(parent / "model.safetensors"), load_file(child / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    config = json.loads((child / "config.json").read_text())
    architecture = config["architecture"]
    assert architecture["d_model"] == 64 and architecture["settings"]["k"] == 8  # the parent's, not the defaults
    assert architecture["dropout"] == 0.1  # training-only: may change
    provenance = config["provenance"]
    assert provenance["init_from"]["weights_sha256"] == first["weights_sha256"]
    assert provenance["init_from"]["provenance"]["steps"] == 3 and provenance["recipe"]["beyond_share"] == 0.1
    assert recipe.lineage_steps(provenance) == 5
    first, then = recipe.lineage_commands("memsizer", config)  # how to train it again: both runs
    assert "--max-steps 3" in first and "--memsizer-k 8" in first
    assert f"--init-from {parent}" in then and "--beyond-share 0.1" in then
    assert recipe.recipe_command("memsizer", config) == f"{first} && {then}"
    for wrong, message in ((["--d-model", "32"], "--d-model would change it"),
                           (["--memsizer-k", "16"], "--memsizer-k would change it"),
                           (["--digit-offset-max", "5"], "--digit-offset-max would change it")):
        with pytest.raises(SystemExit):
            train.parse_args(["--model", "memsizer", "--init-from", str(parent), *wrong])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "performer", "--init-from", str(parent)])
    assert "holds a memsizer model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "memsizer", "--init-from", str(tmp_path / "none")])
    assert "no checkpoint config" in capsys.readouterr().err


def test_quantization_aware_training_trains_against_the_stored_format(tmp_path, capsys, monkeypatch):
    """--quantization-aware: every step's forward and backward run inside weights_as_stored with the
    file's format and group size; a float32 file has nothing to train against."""
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "memsizer", "--quantization-aware", "--weights-format", "float32"])
    assert "give --weights-format int8 or int4" in capsys.readouterr().err
    seen = []
    real = train.weights_as_stored

    def spy(model, weights_format, group_size):
        seen.append((weights_format, group_size))
        return real(model, weights_format, group_size)
    monkeypatch.setattr(train, "weights_as_stored", spy)
    _, _, report = run_train(tmp_path, "memsizer", "--max-steps", "3", "--eval-every", "3", "--quantization-aware",
                             "--weights-format", "int4", "--group-size", "16", "--lr", "3e-2")
    # three steps and the held-out evaluation: the curve judges the weights trained, as the file holds them
    assert seen == [("int4", 16)] * 4 and report["provenance"]["recipe"]["quantization_aware"] is True
    assert report["curve"][-1]["step"] == 3
    assert report["curve"][-1]["eval_accuracy"] == report["final_accuracy"]  # the stored file's, same questions


def test_evaluate_cli_json_and_record(tmp_path, capsys):
    out, _, _ = run_train(tmp_path, "transformer", "--max-steps", "2", "--eval-every", "1000", "--eval-size", "10")
    data = tmp_path / "data" / "numbers__place_value.txt"
    write_examples(generate("interpolate", 50, seed=5), data)
    capsys.readouterr()
    evaluate.main(["--checkpoint", str(out), "--data", str(data.parent), "--json", "--record", "smoke"])
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "correct", "total", "per_place", "model", "examples_per_second"} <= result.keys()
    assert result["total"] == 50 and result["model"] == "transformer"
    assert sum(p["total"] for p in result["per_place"].values()) == 50
    _, _, config = load_checkpoint(out)
    assert config["evaluation"]["smoke"]["correct"] == result["correct"]
    assert config["evaluation"]["smoke"]["runtime"] == "torch"
    # the serving engine's answers from the same weights: the same in float32
    evaluate.main(["--checkpoint", str(out), "--data", str(data.parent), "--json", "--runtime", "ctranslate2"])
    engine = json.loads(capsys.readouterr().out)
    assert engine["runtime"] == "ctranslate2" and engine["per_place"] == result["per_place"]
    assert "int8_kernel" not in engine and "int8_kernel" not in config["evaluation"]["smoke"]
    # int8 answers depend on the CPU's int8 kernel: the record names the class it ran on
    evaluate.main(["--checkpoint", str(out), "--data", str(data.parent), "--json", "--runtime", "ctranslate2-int8",
                   "--device", "cpu", "--record", "smoke_int8"])
    int8 = json.loads(capsys.readouterr().out)
    from models.runtimes.cpu import int8_kernel
    assert int8["int8_kernel"] == int8_kernel() in ("vnni", "avx2", "other")
    assert load_checkpoint(out)[2]["evaluation"]["smoke_int8"]["int8_kernel"] == int8_kernel()
    # torch's own int8 (models/runtimes/torch_int8.py) records the same way, under its runtime's name
    evaluate.main(["--checkpoint", str(out), "--data", str(data.parent), "--json", "--runtime", "torch-int8",
                   "--device", "cpu", "--record", "smoke_torch_int8"])
    torch_int8 = json.loads(capsys.readouterr().out)
    assert torch_int8["runtime"] == "torch-int8" and torch_int8["int8_kernel"] == int8_kernel()
    assert load_checkpoint(out)[2]["evaluation"]["smoke_torch_int8"]["runtime"] == "torch-int8"


def test_evaluate_cli_reports_bad_paths(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint config"):
        evaluate.main(["--checkpoint", str(tmp_path), "--data", str(tmp_path)])


@pytest.mark.slow
def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    run_dir = tmp_path / "state"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--model", "memsizer", *TINY, "--max-steps", "6", "--eval-every", "1000",
           "--eval-size", "10", "--batch-size", "8", "--grad-accum", "2",  # micro-batches skip the all-reduce
           "--out", str(tmp_path / "checkpoint"), "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["ddp"] == {"world_size": 2, "weights_identical_across_ranks": True}
    assert report["provenance"]["examples_seen"] == 6 * 8 * 2 * 2


def test_slim_training_steps_as_plain_training_and_under_bfloat16(tmp_path):
    """--slim-slice: the same weights as plain back-propagation after a few steps (float32 rounding
    aside), and it trains under --bf16 autocast (a recomputation outside the forward's autocast crashed)."""
    common = ["--max-steps", "3", "--eval-every", "3", "--weights-format", "float32", "--lr", "1e-3"]
    plain, _, _ = run_train(tmp_path, "performer", *common, name="plain")
    sliced, _, report = run_train(tmp_path, "performer", *common, "--slim-slice", "1", name="slim")
    a, b = load_file(plain / "model.safetensors"), load_file(sliced / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a), "SLiM changes memory, never the result"
    assert report["provenance"]["command"].count("--slim-slice 1") == 1
    _, _, bf16 = run_train(tmp_path, "performer", *common, "--slim-slice", "2", "--bf16", name="bf16")
    assert bf16["provenance"]["steps"] == 3 and all(torch.isfinite(torch.tensor(p["loss"])) for p in bf16["curve"])
    with pytest.raises(ValueError, match="rewind"):
        run_train(tmp_path, "transformer", *common, "--slim-slice", "2", name="refused")


def test_a_resumed_runs_events_replace_what_the_interrupted_run_wrote_after_its_saved_state(tmp_path):
    from training.curves import curve_writer, write_curve, write_point
    write_curve(tmp_path, [{"step": s, "loss": 1.0 / s} for s in (20, 40, 60)])  # state saved at 40, died after 60
    with curve_writer(tmp_path, resumed_at=40) as writer:
        write_point(writer, {"step": 60, "loss": 0.5})
        write_point(writer, {"step": 80, "loss": 0.25})
    assert tensorboard_scalars(tmp_path / "tensorboard")["train/loss"] == [
        (20, pytest.approx(0.05)), (40, pytest.approx(0.025)), (60, 0.5), (80, 0.25)]
