"""Inference runtimes: what runs a loaded checkpoint's greedy passes, and how one is chosen.

- "torch": the model itself in float32, on any device;
- "torch-int8": every nn.Linear with int8 weights (torch_int8.py; CPU only);
- "ctranslate2" / "ctranslate2-int8": the CTranslate2 engine at float32 / int8 (ctranslate2_engine.py),
  converted at start from the very weights torch would load;
- "auto": per backend, the first of AUTO_ORDER that the backend can run (its description's
  `runtimes`) and, for an int8 one, that it has earned: its checkpoint stores evaluations of that
  runtime on this CPU's int8 kernel class (cpu.py) that answer every place of INT8_GUARDED_SPLITS
  at least as well as float32 did. int8 changes answers on CPUs without a dot-product instruction.

The service, `training.evaluate` and the benchmarks all start runtimes through `start_runtime`.
"""
import copy
import logging
import tempfile
import time
from pathlib import Path

import torch

from models.runtimes.cpu import int8_kernel
from models.task import SPLITS
from models.tokenizer import MAX_ANSWER_CHARS, pad_batch

log = logging.getLogger(__name__)

TORCH_RUNTIMES = ("torch", "torch-int8")  # what any torch model can run on (a backend's default)
RUNTIMES = (*TORCH_RUNTIMES, "ctranslate2", "ctranslate2-int8")
CHOICES = (*RUNTIMES, "auto")  # what PLACEVALUE_RUNTIME accepts


def runtimes_of(spec) -> tuple[str, ...]:
    """The runtimes a backend (a registry description) can run on: torch's, and CTranslate2's where
    the engine's Transformer spec expresses its layers."""
    return RUNTIMES if spec.runs_on_ctranslate2 else TORCH_RUNTIMES
LABELS = {"torch": "torch", "torch-int8": "torch int8", "ctranslate2": "CTranslate2 float32",
          "ctranslate2-int8": "CTranslate2 int8"}  # for people (the page)
# fastest first, as measured on the shipped checkpoints (benchmarks/REPORT.md, serving speed)
AUTO_ORDER = ("ctranslate2-int8", "torch-int8", "ctranslate2", "torch")
# the evaluations an int8 runtime must not lose anything on before "auto" serves it
INT8_GUARDED_SPLITS = ("interpolate", "train")
CTRANSLATE2_COMPUTE_TYPES = {"ctranslate2": "float32", "ctranslate2-int8": "int8"}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> torch.device:
    """"cpu", "cuda" (an error without a GPU) or "auto" (cuda when there is one); for serving,
    training and evaluation alike."""
    if choice not in DEVICES:
        raise ValueError(f"the device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but torch sees no CUDA device")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def kernel_class(device: torch.device) -> str:
    """Which int8 evaluations describe answers on this device (on a GPU, the GPU's own int8)."""
    return int8_kernel() if device.type == "cpu" else device.type


class TorchRunner:
    """Greedy answers from the torch model (float32, or int8 Linear layers)."""

    computes_on_caller = True  # its passes run on the calling thread (its CPU time is the pass's)

    def __init__(self, model, tokenizer, name: str = "torch"):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def answer_ids(self, ids: list[list[int]]) -> list[str]:
        device = next(self.model.parameters(), torch.empty(0)).device
        with torch.inference_mode():
            rows = self.model.generate(pad_batch(ids).to(device), max_len=MAX_ANSWER_CHARS).tolist()
        return [self.tokenizer.decode(row) for row in rows]


class EngineRunner:
    """Greedy answers from a CTranslate2 conversion of a model; the engine computes on threads of its own."""

    computes_on_caller = False

    def __init__(self, engine, name: str, work_dir=None):
        self.engine, self.name = engine, name
        self.work_dir = work_dir  # a TemporaryDirectory holding the conversion, removed with the runner

    def answer_ids(self, ids: list[list[int]]) -> list[str]:
        return self.engine.answer_ids(ids)


def start_runtime(model, tokenizer, name: str, device: torch.device, threads: int = 1, work_dir=None):
    """A runner of `name` (one of RUNTIMES) for `model`; ValueError when the backend or the device
    cannot run it (the message says why). work_dir keeps a CTranslate2 conversion (default: a
    temporary directory that lives as long as the runner)."""
    if name not in RUNTIMES:
        raise ValueError(f"the runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    spec = model.config.spec
    if name not in runtimes_of(spec):
        raise ValueError(f"{spec.name} cannot run on {name}; it runs on {', '.join(runtimes_of(spec))}")
    if name == "torch":
        return TorchRunner(model, tokenizer)
    if name == "torch-int8":
        if device.type != "cpu":
            raise ValueError("torch-int8 runs on the CPU only: use device cpu or another runtime")
        from models.runtimes.torch_int8 import quantize_linear_layers
        # a copy: the float32 model stays for what needs gradients (attributions) and descriptions
        return TorchRunner(quantize_linear_layers(copy.deepcopy(model)), tokenizer, name)
    import importlib.util
    if importlib.util.find_spec("ctranslate2") is None:  # an optional engine: without it, torch for all
        raise ValueError(f"{name} needs the ctranslate2 package, which is not installed")
    from models.runtimes.ctranslate2_engine import CTranslate2Runner, convert
    compute_type = CTRANSLATE2_COMPUTE_TYPES[name]
    keep = None
    if work_dir is None:
        keep = tempfile.TemporaryDirectory(prefix="placevalue-ctranslate2-")
        work_dir = keep.name
    directory = convert(model, Path(work_dir) / f"{spec.name}-{compute_type}",
                        quantization=None if compute_type == "float32" else compute_type)
    return EngineRunner(CTranslate2Runner(directory, tokenizer, threads, compute_type, device=device.type), name, keep)


def check_choice(choice: str, device: torch.device) -> None:
    """A ValueError unless PLACEVALUE_RUNTIME `choice` can serve on `device` (checked before loading)."""
    if choice not in CHOICES:
        raise ValueError(f"RUNTIME must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "torch-int8" and device.type != "cpu":
        raise ValueError("RUNTIME=torch-int8 runs on the CPU only: set DEVICE=cpu or another RUNTIME")


def choose_runtime(model, tokenizer, config: dict, choice: str, device: torch.device, threads: int = 1,
                   work_dir=None):
    """The runner that serves a backend under PLACEVALUE_RUNTIME `choice` (one of CHOICES): for
    "auto", the first of AUTO_ORDER it can run and has earned; for a pinned runtime, that one where
    the backend can run it, else torch float32."""
    check_choice(choice, device)
    name = config.get("model", model.config.backend)
    candidates = AUTO_ORDER if choice == "auto" else (choice, "torch")
    for candidate in candidates:
        if candidate not in runtimes_of(model.config.spec) or (candidate == "torch-int8" and device.type != "cpu"):
            continue
        if choice == "auto" and candidate.endswith("int8"):
            keeps, why = int8_keeps_accuracy(config, kernel_class(device), candidate)
            log.info("%s: RUNTIME=auto %s %s (%s)", name, "may take" if keeps else "skips", candidate, why)
            if not keeps:
                continue
        try:
            return start_runtime(model, tokenizer, candidate, device, threads, work_dir)
        except ValueError as err:  # e.g. a configuration CTranslate2 has no spec for: the next candidate
            log.info("%s: %s is not available: %s", name, candidate, err)
    raise AssertionError("torch float32 runs every backend")


def evaluation_split(name: str, record: dict) -> str | None:
    """The split a stored evaluation measured: its "split" field, or the split its name starts with
    ("train" for any training split)."""
    split = record.get("split") or next((s for s in sorted(SPLITS, key=len, reverse=True)
                                         if name.startswith(s)), None)
    return "train" if split and split.startswith("train") else split


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


def timed(runner, ids) -> tuple[list[str], float]:
    """A runner's answers and the pass's latency in ms."""
    start = time.perf_counter()
    answers = runner.answer_ids(ids)
    return answers, (time.perf_counter() - start) * 1000
