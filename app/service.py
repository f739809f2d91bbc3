"""The question-answering service: every registered backend's checkpoint loaded once per worker,
batched greedy answers, each answer checked against the exact place value.

This is the only app module that imports torch. Every pass runs on the micro-batcher's one
dispatcher thread (app/batching.py): questions from concurrent requests share a pass, so
gunicorn workers x torch threads bounds the cores in use whatever the number of request
threads, and the batcher's bounded queue sheds load beyond it.
"""
import logging
import time
from pathlib import Path

import torch

from app.batching import MicroBatcher
from app.metrics import record_pass
from models import registry
from models.checkpoint import CheckpointError, load_checkpoint
from models.config import LEGACY_DEFAULTS
from models.cpu import int8_kernel
from models.ctranslate2_runtime import COMPUTE_TYPES as CTRANSLATE2_COMPUTE_TYPES, CTranslate2Runner, convert
from models.dynamic_int8 import quantize_linear_layers
from models.task import PLACE_NAMES, SPLITS, Assessment, assess, generate
from models.tokenizer import MAX_ANSWER_CHARS, QuestionError, Tokenizer, pad_batch

log = logging.getLogger(__name__)
# the evaluations the page and /models show per place, in this order ("train": the training distribution)
RELIABILITY_SPLITS = ("interpolate", "train", "extrapolate")


# PLACEVALUE_RUNTIME: what runs a backend's passes. "torch" runs every backend in torch float32;
# "torch-int8" in torch with int8 weights (models/dynamic_int8.py; CPU only); "ctranslate2" and
# "ctranslate2-int8" run each backend that CTranslate2 can express (softmax attention) on it at that
# compute type, converted at start from the very weights torch would load, and keep torch for the rest.
# "auto" takes, per backend, the first of AUTO_PREFERENCE that it can run and, for an int8 one, whose
# stored evaluations measured on this CPU's int8 kernel class (models/cpu.py) answer every
# in-distribution place at least as well as float32 does (int8 changes answers on CPUs without a
# dot-product instruction).
RUNTIMES = ("torch", "torch-int8", *CTRANSLATE2_COMPUTE_TYPES, "auto")
# fastest first, as measured on the shipped checkpoints (benchmarks/RESULTS.md, section 4b)
AUTO_PREFERENCE = ("ctranslate2-int8", "torch-int8", "ctranslate2", "torch")
# the evaluations int8 must not lose anything on before "auto" serves it
INT8_GUARDED_SPLITS = ("interpolate", "train")


class BackendUnavailable(Exception):
    """The requested backend has no loaded checkpoint."""


def resolve_device(choice: str) -> torch.device:
    """PLACEVALUE_DEVICE: "cpu", "cuda" (an error without a GPU) or "auto" (cuda when there is one)."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"DEVICE must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("DEVICE=cuda but torch sees no CUDA device")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def train_command(name: str) -> str:
    options = registry.get(name).train_options
    return f"python -m training.train --model {name}" + (f" {options}" if options else "")


class QAService:
    """Answers place-value questions with whichever backends' checkpoints it finds."""

    def __init__(self, checkpoint_dir, torch_threads: int = 1, required=None, device: str = "cpu",
                 batching: dict | None = None, runtime: str = "torch"):
        """batching: MicroBatcher's settings (max_batch, max_delay_ms, queue_limit, max_wait_ms);
        max_batch 1 runs each request's questions in a pass of their own. runtime: see RUNTIMES."""
        if runtime not in RUNTIMES:
            raise ValueError(f"RUNTIME must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if runtime == "torch-int8" and resolve_device(device).type != "cpu":
            raise ValueError("RUNTIME=torch-int8 runs on the CPU only: set DEVICE=cpu or another RUNTIME")
        self.torch_threads = max(1, int(torch_threads))
        torch.set_num_threads(self.torch_threads)
        self._dispatcher_threads_set = False
        self.device = resolve_device(device)
        # which int8 evaluations describe answers here (on a GPU, the GPU's own int8)
        self.int8_kernel = int8_kernel() if self.device.type == "cpu" else self.device.type
        self.tokenizer = Tokenizer()
        self.backends = registry.names()
        self.default_backend = registry.DEFAULT
        # ready means these are loaded; by default every backend whose checkpoint ships
        self.required = tuple(required or (b.name for b in registry.backends() if b.shipped))
        unknown = set(self.required) - set(self.backends)
        if unknown:
            raise ValueError(f"required models {sorted(unknown)} are not registered backends: {self.backends}")
        self.models, self.configs, self.load_errors = {}, {}, {}
        for name in self.backends:
            directory = Path(checkpoint_dir) / name
            try:
                model, tokenizer, config = load_checkpoint(directory, device=self.device)
                if config.get("model") != name:
                    raise CheckpointError(f"{directory}: holds a {config.get('model')!r} model, not {name!r}")
            except CheckpointError as err:
                shipped = registry.get(name).shipped
                self.load_errors[name] = (str(err) if shipped or directory.exists() else
                                          f"no checkpoint ships for {name}: train one with `{train_command(name)}`")
                (log.error if name in self.required else log.info)("backend %s unavailable: %s", name, err)
                continue
            self.models[name], self.configs[name], self.tokenizer = model, config, tokenizer
            log.info("loaded %s from %s on %s (sha256 %s)", name, directory, self.device,
                     config["weights"]["sha256"][:12])
        self.runtimes, self._engines, self._engine_dir = {}, {}, None
        for name in self.models:
            self.runtimes[name] = self._start_runtime(name, runtime)
            log.info("%s runs on %s", name, self.runtimes[name])
        self.batcher = MicroBatcher(self._pass, on_pass=self._record_pass, **(batching or {}))
        for name in self.models:  # the first pass allocates and picks kernels: pay it before serving
            self.answer([self.example_question(seed=0)], name)

    def ready(self, name: str | None = None) -> bool:
        """Whether `name`, or without one every required backend, is loaded."""
        return name in self.models if name else all(n in self.models for n in self.required)

    def encode(self, questions: list) -> list[list[int]]:
        """Validate every question once into its token ids; QuestionError names the first bad one
        by its index."""
        ids = []
        for index, question in enumerate(questions):
            try:
                ids.append(self.tokenizer.encode(question))
            except QuestionError as err:
                raise QuestionError(err.code, err.message, index) from None
        return ids

    def run(self, ids: list[list[int]], name: str) -> tuple[list[str], float]:
        """Answers for encoded questions from backend `name`, and the latency in ms of the greedy
        pass they rode in (shared with other requests' questions when the batcher joined them).
        Raises BackendUnavailable, or batching.Overloaded when the queue is full."""
        if name not in self.models:
            raise BackendUnavailable(self.load_errors.get(name, f"backend {name!r} is not loaded"))
        answers, latency_ms, _ = self.batcher.submit(name, ids)
        return answers, latency_ms

    def answer(self, questions: list[str], name: str) -> tuple[list[str], float]:
        """Answers for `questions` from one batched greedy pass (possibly shared with other requests'
        questions), and the pass's latency in ms."""
        return self.run(self.encode(questions), name)

    def _start_runtime(self, name: str, runtime: str) -> str:
        """Prepare what serves backend `name` under PLACEVALUE_RUNTIME `runtime`; returns its runtime."""
        if runtime == "auto":  # torch's int8 kernels are CPU kernels
            candidates = [r for r in AUTO_PREFERENCE if r != "torch-int8" or self.device.type == "cpu"]
        else:  # a pinned engine serves what it can express; torch in that precision, or float32, the rest
            candidates = [runtime, "torch"]
        for candidate in candidates:
            if runtime == "auto" and candidate.endswith("int8"):
                keeps, why = int8_keeps_accuracy(self.configs[name], self.int8_kernel, candidate)
                log.info("%s: RUNTIME=auto %s %s (%s)", name, "may take" if keeps else "skips", candidate, why)
                if not keeps:
                    continue
            if candidate == "torch":
                return candidate
            if candidate == "torch-int8":
                self.models[name] = quantize_linear_layers(self.models[name])
                return candidate
            if self._start_engine(name, CTRANSLATE2_COMPUTE_TYPES[candidate]):
                return candidate
        return "torch"

    def _start_engine(self, name: str, compute_type: str) -> bool:
        """Convert backend `name` for CTranslate2 at `compute_type`; False when the engine is not
        installed or cannot express the backend (it then stays on torch)."""
        import importlib.util
        import tempfile
        if importlib.util.find_spec("ctranslate2") is None:  # an optional engine: without it, torch for all
            log.warning("a CTranslate2 runtime was asked for but ctranslate2 is not installed: %s runs on torch", name)
            return False
        if self._engine_dir is None:
            self._engine_dir = tempfile.TemporaryDirectory(prefix="placevalue-ctranslate2-")
        try:
            directory = convert(self.models[name], Path(self._engine_dir.name) / f"{name}-{compute_type}",
                                quantization=None if compute_type == "float32" else compute_type)
        except ValueError as err:  # an attention kind the engine has no spec for
            log.info("%s: CTranslate2 cannot serve it: %s", name, err)
            return False
        self._engines[name] = CTranslate2Runner(directory, self.tokenizer, self.torch_threads, compute_type,
                                                device=self.device.type)
        return True

    def _record_pass(self, name: str, questions: int, seconds: float, cpu_seconds: float) -> None:
        # an engine computes on threads of its own: the dispatcher's CPU time says nothing there
        record_pass(name, questions, seconds, None if name in self._engines else cpu_seconds)

    def _pass(self, name: str, ids: list[list[int]]) -> tuple[list[str], float]:
        """One batched greedy pass; runs only on the batcher's dispatcher thread."""
        if not self._dispatcher_threads_set:  # OpenMP's thread count is per calling thread
            torch.set_num_threads(self.torch_threads)
            self._dispatcher_threads_set = True
        if name in self._engines:
            start = time.perf_counter()
            answers = self._engines[name].answer_ids(ids)
            return answers, (time.perf_counter() - start) * 1000
        with torch.inference_mode():
            start = time.perf_counter()
            src = pad_batch(ids).to(self.device)
            rows = self.models[name].generate(src, max_len=MAX_ANSWER_CHARS).tolist()
            latency_ms = (time.perf_counter() - start) * 1000
        return [self.tokenizer.decode(row) for row in rows], latency_ms

    def training_balanced_share(self, name: str) -> float:
        """The share of place-balanced questions in the backend's training batches, from its
        checkpoint's recorded recipe (0: DeepMind's sampler alone, also for older checkpoints)."""
        recipe = self.configs.get(name, {}).get("provenance", {}).get("recipe", {})
        return float(recipe.get("balanced_share") or 0.0)

    def assess(self, question: str, name: str) -> Assessment:
        """The exact answer and the out-of-distribution reasons for the backend's own training mix."""
        return assess(question, self.training_balanced_share(name))

    def describe(self) -> list[dict]:
        """What /models and the page report for each backend."""
        rows = []
        for spec in registry.backends():
            name = spec.name
            row = {"name": name, "display_name": spec.display_name, "paper": spec.paper, "summary": spec.summary,
                   "shipped": spec.shipped, "required": name in self.required, "ready": name in self.models,
                   "train_command": train_command(name), "training_status": spec.training_status or None,
                   "runtime": self.runtimes.get(name)}
            config = self.configs.get(name)
            if config is None:
                row["error"] = self.load_errors.get(name)
                rows.append(row)
                continue
            arch, evaluation = config["architecture"], config.get("evaluation", {})
            reliability = per_place_reliability(evaluation, self.runtimes.get(name, "torch"), self.int8_kernel)
            row.update({
                "parameters": config["parameters"],
                "architecture": {"backend": name, **{k: arch[k] for k in (
                    "n_encoder_layers", "n_decoder_layers", "d_model", "d_ff", "n_heads")},
                    # how it knows where a digit is (what a stored config without a mode meant)
                    "positions": {shown: {**LEGACY_DEFAULTS, **arch}[field] for shown, field in (
                        ("source", "source_positions"), ("digits", "digit_positions"),
                        ("relative", "relative_positions"))},
                    "settings": arch.get("settings") or {}},
                "checkpoint_sha256": config["weights"]["sha256"],
                "checkpoint_bytes": config["weights"]["bytes"],
                "weights_format": config["weights"]["format"],
                "training_steps": config.get("provenance", {}).get("steps"),
                "training_balanced_share": self.training_balanced_share(name),
                "accuracy": {k: v["accuracy"] for k, v in evaluation.items()},
                "interpolate_accuracy": reliability.get("interpolate", {}).get("accuracy"),
                "reliability": reliability,
            })
            rows.append(row)
        return rows

    @staticmethod
    def example_question(seed=None) -> str:
        """A freshly generated interpolate-distribution question."""
        (question, _), = generate("interpolate", 1, seed=seed if seed is not None else time.time_ns())
        return question


def evaluation_split(name: str, record: dict) -> str | None:
    """The split an evaluation record measured: its "split" field, or the split its name starts with."""
    split = record.get("split") or next((s for s in sorted(SPLITS, key=len, reverse=True)
                                         if name.startswith(s)), None)
    return "train" if split and split.startswith("train") else split


def per_place_reliability(evaluation: dict, runtime: str = "torch", int8_kernel: str | None = None) -> dict:
    """{split: {evaluation, runtime, int8_kernel, accuracy, total, per_place: {place: accuracy}}} from the
    largest recorded evaluation of each of RELIABILITY_SPLITS, places in DeepMind's order; measured
    with the runtime that serves the backend where such a record exists (records without one are
    torch's), and for int8 on `int8_kernel`'s class where one was measured there (models/cpu.py)."""
    out = {}
    for split in RELIABILITY_SPLITS:
        records = [(n, r) for n, r in evaluation.items() if evaluation_split(n, r) == split and r.get("per_place")]
        served = [(n, r) for n, r in records if r.get("runtime", "torch") == runtime]
        if runtime.endswith("int8"):
            served = [(n, r) for n, r in served if r.get("int8_kernel") == int8_kernel] or served
        if records:  # the largest, preferring the serving runtime's; the first of equals
            name, record = max(served or records, key=lambda item: item[1]["total"])
            places = [p for p in PLACE_NAMES if p in record["per_place"]]
            out[split] = {"evaluation": name, "runtime": record.get("runtime", "torch"),
                          "int8_kernel": record.get("int8_kernel"),
                          "accuracy": record["accuracy"], "total": record["total"],
                          "per_place": {p: record["per_place"][p]["accuracy"] for p in places},
                          "per_place_total": {p: record["per_place"][p]["total"] for p in places}}
    return out


def int8_keeps_accuracy(config: dict, kernel: str, runtime: str = "ctranslate2-int8") -> tuple[bool, str]:
    """Whether a checkpoint's stored evaluations of int8 `runtime` measured on `kernel` cover
    INT8_GUARDED_SPLITS and answer every place there at least as well as float32 (torch or
    CTranslate2) did on the same data and weights, and why (for the log)."""
    weights = config.get("weights", {}).get("sha256")
    records = {n: r for n, r in config.get("evaluation", {}).items()
               if r.get("per_place") and r.get("weights_sha256") == weights}
    for split in INT8_GUARDED_SPLITS:
        int8 = [(n, r) for n, r in records.items() if evaluation_split(n, r) == split
                and r.get("runtime") == runtime and r.get("int8_kernel") == kernel]
        if not int8:
            return False, f"no {runtime} evaluation of {split} stored for the {kernel} int8 kernel"
        for name, record in int8:
            references = [(n, r) for n, r in records.items() if r.get("data") == record.get("data")
                          and r.get("runtime", "torch") in ("torch", "ctranslate2")]
            if not references:
                return False, f"{name}: no float32 evaluation of {record.get('data')} to compare with"
            for reference_name, reference in references:
                for place, row in reference["per_place"].items():
                    got = record["per_place"].get(place, {}).get("accuracy", 0.0)
                    if got < row["accuracy"]:
                        return False, (f"{name}: {place} {got:.2%} in int8 against {row['accuracy']:.2%} "
                                       f"in {reference_name}")
    return True, f"{runtime} on the {kernel} kernel keeps every place of {', '.join(INT8_GUARDED_SPLITS)}"
