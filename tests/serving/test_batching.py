"""The cross-request micro-batcher: requests join passes, each gets its own answers back, the
queue is bounded in questions and in waiting time, and a failing pass fails only its requests."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from serving.batching import MicroBatcher, Overloaded
from serving.service import QAService
from models.task import generate


def wait_until(predicate, timeout=30.0):
    """Poll the batcher's state (not a clock window): fail only if it never gets there."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the batcher never reached the awaited state"
        time.sleep(0.001)


class RecordingRun:
    """A fake backend: answers each item with (backend, item * 10) after `seconds`, recording passes."""

    def __init__(self, seconds=0.0, gate=None, fail_on=None):
        self.seconds, self.gate, self.fail_on = seconds, gate, fail_on
        self.passes = []

    def __call__(self, name, items):
        self.passes.append((name, list(items)))
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [(name, item * 10) for item in items], self.seconds * 1000


def test_concurrent_requests_share_passes_and_get_their_own_answers():
    run = RecordingRun(seconds=0.02)
    batcher = MicroBatcher(run, max_batch=16, max_delay_ms=20, queue_limit=1000)
    jobs = [("a" if i % 3 else "b", [i, 1000 + i]) for i in range(40)]
    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(lambda job: batcher.submit(*job), jobs))
    batcher.close()
    for (name, items), (answers, _, in_pass) in zip(jobs, results):
        assert answers == [(name, item * 10) for item in items]
        assert len(items) <= in_pass <= 16
    assert all(len(items) <= 16 for _, items in run.passes)
    assert len(run.passes) < len(jobs), "no two requests ever shared a pass"
    assert batcher.stats.largest > 2 and batcher.stats.questions == 80


def test_a_pass_never_mixes_backends():
    run = RecordingRun(seconds=0.01)
    batcher = MicroBatcher(run, max_batch=64, max_delay_ms=20)
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: batcher.submit("ab"[i % 2], [i]), range(20)))
    batcher.close()
    for name, items in run.passes:
        assert all("ab"[i % 2] == name for i in items)


def test_a_request_larger_than_max_batch_runs_whole_and_alone():
    run = RecordingRun()
    batcher = MicroBatcher(run, max_batch=4, max_delay_ms=0, queue_limit=8)
    answers, _, in_pass = batcher.submit("a", list(range(10)))  # above both limits, nothing else queued
    batcher.close()
    assert answers == [("a", i * 10) for i in range(10)] and in_pass == 10


def test_full_queue_sheds_at_once_and_changes_nothing():
    gate = threading.Event()
    run = RecordingRun(gate=gate)
    batcher = MicroBatcher(run, max_batch=1, max_delay_ms=0, queue_limit=3, max_wait_ms=5000)
    pool = ThreadPoolExecutor(8)
    running = pool.submit(batcher.submit, "a", [0])  # occupies the dispatcher until the gate opens
    wait_until(lambda: run.passes)
    queued = [pool.submit(batcher.submit, "a", [i]) for i in (1, 2, 3)]
    wait_until(lambda: batcher.queued() == 3)
    with pytest.raises(Overloaded) as err:  # the dispatcher is still held: only shedding can answer now
        batcher.submit("a", [4])
    assert err.value.retry_after >= 1 and "queued" in str(err.value)
    assert batcher.queued() == 3 and batcher.stats.shed == 1
    gate.set()
    assert running.result()[0] == [("a", 0)]
    assert [f.result()[0] for f in queued] == [[("a", 10)], [("a", 20)], [("a", 30)]]
    pool.shutdown()
    batcher.close()


def test_a_request_not_started_within_the_bound_is_dropped_from_the_queue():
    gate = threading.Event()
    run = RecordingRun(gate=gate)
    batcher = MicroBatcher(run, max_batch=1, max_delay_ms=0, queue_limit=100, max_wait_ms=200)
    with ThreadPoolExecutor(2) as pool:
        blocking = pool.submit(batcher.submit, "a", [0])
        wait_until(lambda: run.passes)
        start = time.monotonic()
        with pytest.raises(Overloaded) as err:
            batcher.submit("a", [1])
        # a wait is never shorter than its bound, however busy the machine
        assert time.monotonic() - start >= 0.2 and "not started within 200 ms" in str(err.value)
        assert batcher.queued() == 0 and batcher.stats.expired == 1
        gate.set()
        blocking.result()
    assert [items for _, items in run.passes] == [[0]], "the expired request still ran"
    batcher.close()


def test_a_failing_pass_fails_its_own_requests_only_and_the_batcher_goes_on():
    run = RecordingRun(fail_on=13)
    batcher = MicroBatcher(run, max_batch=1, max_delay_ms=0)
    with pytest.raises(ValueError, match="bad item 13"):
        batcher.submit("a", [13])
    assert batcher.submit("a", [2])[0] == [("a", 20)]
    batcher.close()


def closed_loop_callers(batcher, callers: int, rounds: int, think_seconds: float) -> None:
    """`callers` threads; caller i submits its next question (i + 1) * think_seconds after its last
    answer (as a server writes answers one after the other, callers come back spread out)."""
    def caller(index):
        for round_ in range(rounds):
            assert batcher.submit("a", [index * 100 + round_])[0] == [("a", (index * 100 + round_) * 10)]
            time.sleep(think_seconds * (index + 1))

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))


def test_callers_that_come_back_are_waited_for_and_merge_into_one_pass():
    """Closed-loop callers answered by a pass come back 10-60 ms later; the next pass waits for as
    many callers as it saw, so after the first pass each pass holds every caller."""
    run = RecordingRun(seconds=0.03)
    # passes start when the callers are back, so the window only bounds the last pass (one caller may
    # be a round behind) and how late a caller slowed by a busy machine may be
    batcher = MicroBatcher(run, max_batch=64, max_delay_ms=3000, max_wait_ms=30_000)
    closed_loop_callers(batcher, callers=6, rounds=8, think_seconds=0.01)
    batcher.close()
    sizes = [len(items) for _, items in run.passes]
    # the first passes may start before every caller's thread has submitted (a busy machine starts threads
    # late), which shifts the last one too; once all six are in one pass, every later pass holds all six
    assert 6 in sizes and sizes.index(6) <= 3, sizes
    merged = sizes[sizes.index(6):-1]
    assert sum(sizes) == 48 and merged == [6] * len(merged), sizes


def test_without_expecting_callers_a_short_window_splits_them_into_cohorts():
    """The same kind of callers with a 2 ms window and no expectation: those answered last come back
    after the next pass has started, so passes hold part of the callers (what expecting them fixes).
    Callers come back 50-300 ms apart, so only a stall of a quarter second could merge them."""
    run = RecordingRun(seconds=0.03)
    batcher = MicroBatcher(run, max_batch=64, max_delay_ms=2, expect_callers=False)
    closed_loop_callers(batcher, callers=6, rounds=8, think_seconds=0.05)
    batcher.close()
    sizes = [len(items) for _, items in run.passes]
    assert sum(sizes) == 48 and len(sizes) > 10 and max(sizes[1:-1]) < 6, sizes


def test_a_lone_caller_never_waits_for_the_window():
    """One caller at a time: each pass starts because its one expected caller is there, never
    because a window ran out, though a pass may be held open for a minute."""
    run = RecordingRun()
    batcher = MicroBatcher(run, max_batch=64, max_delay_ms=60_000)
    for item in range(5):
        assert batcher.submit("a", [item])[0] == [("a", item * 10)]
    batcher.close()
    assert batcher.stats.closed_by == {"callers": 5}


def test_when_callers_stop_coming_back_one_pass_waits_the_window_and_the_next_ones_do_not():
    gate = threading.Event()
    run = RecordingRun(gate=gate)
    batcher = MicroBatcher(run, max_batch=64, max_delay_ms=100)
    with ThreadPoolExecutor(6) as pool:  # six callers (one pass of one, then one of five) ...
        first = pool.submit(batcher.submit, "a", [0])
        wait_until(lambda: run.passes)
        rest = [pool.submit(batcher.submit, "a", [item]) for item in range(1, 6)]
        wait_until(lambda: batcher.queued() == 5)
        gate.set()
        [job.result() for job in [first, *rest]]
    assert [items for _, items in run.passes] == [[0], [1, 2, 3, 4, 5]]
    assert batcher.stats.closed_by == {"callers": 1, "window": 1}  # the five waited for a sixth
    batcher.submit("a", [100])  # ... then only one of them goes on
    assert batcher.stats.closed_by == {"callers": 1, "window": 2}, "the pass did not wait for the five it saw"
    for item in range(3):
        batcher.submit("a", [101 + item])
    batcher.close()
    assert batcher.stats.closed_by == {"callers": 4, "window": 2}, "later passes still waited for absent callers"


@pytest.mark.parametrize("bad", [dict(max_batch=0), dict(queue_limit=0), dict(max_delay_ms=-1), dict(max_wait_ms=0)])
def test_settings_are_validated(bad):
    with pytest.raises(ValueError):
        MicroBatcher(RecordingRun(), **bad)


def test_batched_answers_through_the_service_equal_single_answers(tiny_checkpoints):
    """Questions of different lengths joined across requests into padded passes answer exactly as alone."""
    questions = [q for q, _ in generate("train", 48, seed=5)]
    alone = QAService(tiny_checkpoints, batching={"max_batch": 1, "max_delay_ms": 0}, runtime="torch")
    joined = QAService(tiny_checkpoints, batching={"max_batch": 64, "max_delay_ms": 30}, runtime="torch")
    try:
        for name in alone.models:
            expected = [alone.answer([q], name)[0][0] for q in questions]
            before = joined.batcher.stats.passes
            with ThreadPoolExecutor(16) as pool:
                got = list(pool.map(lambda q: joined.answer([q], name)[0][0], questions))
            assert got == expected, name
            assert joined.batcher.stats.passes - before < len(questions), f"{name}: no pass was shared"
    finally:
        alone.batcher.close()
        joined.batcher.close()


def test_device_setting(tiny_checkpoints):
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        QAService(tiny_checkpoints, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            QAService(tiny_checkpoints, device="cuda")
    service = QAService(tiny_checkpoints, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert service.device.type == expected
    assert all(p.device.type == expected for m in service.models.values() for p in m.parameters())
    service.batcher.close()


@pytest.mark.parametrize("runtime", ["ctranslate2", "ctranslate2-int8"])
def test_ctranslate2_runtime_serves_what_it_can_express_and_leaves_the_rest_on_torch(tiny_checkpoints, runtime):
    questions = [q for q, _ in generate("train", 16, seed=8)]
    plain = QAService(tiny_checkpoints, batching={"max_delay_ms": 0}, runtime="torch")
    engine = QAService(tiny_checkpoints, batching={"max_delay_ms": 0}, runtime=runtime)
    try:
        assert engine.runtimes["transformer"] == runtime
        assert all(engine.runtimes[n] == "torch" for n in engine.models if n != "transformer")
        assert {row["name"]: row["runtime"] for row in engine.describe()}["transformer"] == runtime
        for name in engine.models:
            if engine.runtimes[name] == "torch":
                assert engine.answer(questions, name)[0] == plain.answer(questions, name)[0]
        if runtime == "ctranslate2":  # same weights, same float32 arithmetic up to rounding: same greedy answers
            assert engine.answer(questions, "transformer")[0] == plain.answer(questions, "transformer")[0]
        else:  # int8 rounds the weights: still one well-formed answer per question
            assert len(engine.answer(questions, "transformer")[0]) == len(questions)
    finally:
        plain.batcher.close()
        engine.batcher.close()
    with pytest.raises(ValueError, match="RUNTIME"):
        QAService(tiny_checkpoints, runtime="onnx")


def test_torch_int8_runtime_quantizes_every_backend_on_the_cpu(tiny_checkpoints, monkeypatch):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    questions = [q for q, _ in generate("train", 8, seed=9)]
    service = QAService(tiny_checkpoints, batching={"max_delay_ms": 0}, runtime="torch-int8")
    try:
        assert set(service.runtimes.values()) == {"torch-int8"}
        for name, runner in service.runners.items():
            assert any(isinstance(m, DynamicInt8Linear) for m in runner.model.modules()), name
            assert not any(isinstance(m, DynamicInt8Linear) for m in service.models[name].modules()), \
                "the float32 model stays for gradients (attributions)"
            answers, _ = service.answer(questions, name)
            assert len(answers) == len(questions) and all(isinstance(a, str) for a in answers)
        assert {row["runtime"] for row in service.describe()} == {"torch-int8"}
    finally:
        service.batcher.close()
    # on a GPU host it is refused at start, before any model loads
    import serving.service
    monkeypatch.setattr(serving.service, "resolve_device", lambda choice: torch.device("cuda"))
    with pytest.raises(ValueError, match="CPU only"):
        QAService(tiny_checkpoints, runtime="torch-int8", device="cuda")


def test_a_transformer_with_rotary_positions_stays_on_torch_under_the_ctranslate2_runtime(tmp_path):
    """The engine's encoder-decoder spec has no rotary positions: such a checkpoint (a measured length
    lever) is served by torch, with the same answers as a torch-only service, instead of failing at start."""
    from models.checkpoint import save_checkpoint
    from models.tokenizer import Tokenizer
    from tests.conftest import tiny_model
    save_checkpoint(tiny_model("transformer", relative_positions="rope"), tmp_path / "transformer", Tokenizer(),
                    "float32")
    questions = [q for q, _ in generate("train", 8, seed=9)]
    plain = QAService(tmp_path, required=["transformer"], batching={"max_delay_ms": 0}, runtime="torch")
    engine = QAService(tmp_path, required=["transformer"], batching={"max_delay_ms": 0}, runtime="ctranslate2")
    try:
        assert engine.runtimes["transformer"] == "torch"
        assert {row["name"]: row["runtime"] for row in engine.describe()}["transformer"] == "torch"
        assert engine.answer(questions, "transformer")[0] == plain.answer(questions, "transformer")[0]
    finally:
        plain.batcher.close()
        engine.batcher.close()


def test_reliability_comes_from_the_serving_runtime_when_it_was_measured():
    from serving.catalog import per_place_reliability

    def record(accuracy, total, runtime=None):
        row = {"split": "interpolate", "accuracy": accuracy, "total": total,
               "per_place": {"tens": {"correct": int(accuracy * total), "total": total, "accuracy": accuracy}}}
        return {**row, "runtime": runtime} if runtime else row

    evaluation = {"interpolate_torch": record(1.0, 10000), "interpolate_small_int8": record(0.99, 100, "ctranslate2-int8")}
    assert per_place_reliability(evaluation)["interpolate"]["evaluation"] == "interpolate_torch"
    served = per_place_reliability(evaluation, "ctranslate2-int8")["interpolate"]
    assert served["evaluation"] == "interpolate_small_int8" and served["runtime"] == "ctranslate2-int8"
    # no record of that runtime: torch's is shown, and says so
    assert per_place_reliability(evaluation, "ctranslate2")["interpolate"]["runtime"] == "torch"
