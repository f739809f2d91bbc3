"""The question-answering service: both checkpoints loaded once per worker, batched greedy answers.

This is the only app module that imports torch. One lock per service serialises inference
inside a worker, so gunicorn workers x torch threads bounds the cores in use whatever the
number of request threads.
"""
import logging
import threading
import time
from pathlib import Path

import torch

from models.checkpoint import CheckpointError, load_checkpoint
from models.registry import BACKENDS, DISPLAY_NAMES
from models.tokenizer import Tokenizer, pad_batch
from training.data import generate

log = logging.getLogger(__name__)


class BackendUnavailable(Exception):
    """The requested backend has no loaded checkpoint."""


class QAService:
    """Answers place-value questions with the Transformer or MemSizer checkpoint."""

    backends = BACKENDS

    def __init__(self, checkpoint_dir, torch_threads: int = 1, max_answer_chars: int = 30):
        torch.set_num_threads(max(1, int(torch_threads)))
        self.tokenizer = Tokenizer()
        self.max_answer_chars = max_answer_chars
        self.models, self.configs, self.load_errors = {}, {}, {}
        self._lock = threading.Lock()
        for name in BACKENDS:
            directory = Path(checkpoint_dir) / name
            try:
                model, tokenizer, config = load_checkpoint(directory)
                if config.get("model") != name:
                    raise CheckpointError(f"{directory}: holds a {config.get('model')!r} model, not {name!r}")
                self.models[name], self.configs[name] = model, config
                self.tokenizer = tokenizer
                log.info("loaded %s from %s (sha256 %s)", name, directory, config["weights"]["sha256"][:12])
            except CheckpointError as err:
                self.load_errors[name] = str(err)
                log.error("backend %s unavailable: %s", name, err)
        for name in self.models:  # the first pass allocates and picks kernels: pay it before serving
            self.answer([self.example_question(seed=0)], name)

    def ready(self, name: str | None = None) -> bool:
        return name in self.models if name else len(self.models) == len(BACKENDS)

    def validate(self, question) -> None:
        """Raise ValueError naming the problem with a question (type, length, characters)."""
        self.tokenizer.validate(question)

    def answer(self, questions: list[str], name: str) -> tuple[list[str], float]:
        """Answers for `questions` from one batched greedy pass, and its latency in ms."""
        if name not in self.models:
            raise BackendUnavailable(self.load_errors.get(name, f"backend {name!r} is not loaded"))
        src = pad_batch([self.tokenizer.encode(q) for q in questions])
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            rows = self.models[name].generate(src, max_len=self.max_answer_chars).tolist()
            latency_ms = (time.perf_counter() - start) * 1000
        return [self.tokenizer.decode(row) for row in rows], latency_ms

    def describe(self) -> list[dict]:
        """What /models reports for each backend."""
        rows = []
        for name in BACKENDS:
            row = {"name": name, "display_name": DISPLAY_NAMES[name], "ready": name in self.models}
            config = self.configs.get(name)
            if config is None:
                row["error"] = self.load_errors.get(name)
            else:
                arch, evaluation = config["architecture"], config.get("evaluation", {})
                interpolate = next((v for k, v in evaluation.items() if k.startswith("interpolate")), None)
                row.update({
                    "parameters": config["parameters"],
                    "architecture": {k: arch[k] for k in ("attention", "n_encoder_layers", "n_decoder_layers",
                                                          "d_model", "d_ff", "n_heads")},
                    "checkpoint_sha256": config["weights"]["sha256"],
                    "checkpoint_bytes": config["weights"]["bytes"],
                    "weights_format": config["weights"]["format"],
                    "training_steps": config.get("provenance", {}).get("steps"),
                    "accuracy": {k: v["accuracy"] for k, v in evaluation.items()},
                    "interpolate_accuracy": interpolate["accuracy"] if interpolate else None,
                })
            rows.append(row)
        return rows

    @staticmethod
    def example_question(seed=None) -> str:
        """A freshly generated interpolate-distribution question."""
        (question, _), = generate("interpolate", 1, seed=seed if seed is not None else time.time_ns())
        return question

