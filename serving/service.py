"""The question-answering service: every registered backend's checkpoint loaded once per worker,
each served by the runtime models.runtimes chooses. It owns a request: a question is normalised to
the trained wording, encoded, answered in a batched greedy pass, assessed and checked against the
exact place value (`respond`, `explain`); the web views only adapt it to JSON or HTML.

This is the only serving module that imports torch. Every pass runs on the micro-batcher's one
dispatcher thread (serving/batching.py): questions from concurrent requests share a pass, so
gunicorn workers x torch threads bounds the cores in use whatever the number of request
threads, and the batcher's bounded queue sheds load beyond it.
"""
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from serving.batching import MicroBatcher, Overloaded
from serving.catalog import (describe_backends, measured_beyond_accuracy, training_balanced_share,
                             training_beyond_share)
from serving.settings import DEFAULTS
from models import registry
from models.attribution import explain
from models.checkpoint import CheckpointError, load_checkpoint
from models.runtimes import check_choice, choose_runtime, kernel_class, resolve_device, timed
from models.task import Assessment, assess, generate, normalise_question
from models.tokenizer import QuestionError, Tokenizer
from training.recipe import recipe_command

log = logging.getLogger(__name__)
EXPLAIN_SECONDS = 3.0  # an explanation's time before any is measured (1-3 s on two cores, benchmarks/REPORT.md)


class BackendUnavailable(Exception):
    """The requested backend has no loaded checkpoint (or is not a registered backend)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"the {name} backend is not loaded: {reason}")
        self.name = name


@dataclass
class Reply:
    """One question answered by one backend: as submitted, as the model was asked (the trained
    wording), the answer, its assessment against the task, and the pass's latency."""

    submitted: str
    question: str
    model: str
    answer: str
    assessment: Assessment
    latency_ms: float
    attribution: dict | None = None

    @property
    def check(self) -> dict:
        return self.assessment.check(self.answer)


class QAService:
    """Answers place-value questions with whichever backends' checkpoints it finds."""

    def __init__(self, checkpoint_dir, torch_threads: int | None = None, required=None, device: str = DEFAULTS.device,
                 batching: dict | None = None, runtime: str = DEFAULTS.runtime,
                 explain_concurrency: int = DEFAULTS.explain_concurrency, on_pass=None):
        """batching: MicroBatcher's settings (max_batch, max_delay_ms, queue_limit, max_wait_ms);
        max_batch 1 runs each request's questions in a pass of their own. runtime: one of
        models.runtimes.CHOICES. explain_concurrency: explanations computed at once (beyond it,
        Overloaded), so that their gradients cannot starve the answers. on_pass(name, questions,
        seconds, cpu_seconds or None) hears of every pass (the app's metrics)."""
        self.on_pass = on_pass
        if explain_concurrency < 1:
            raise ValueError(f"EXPLAIN_CONCURRENCY must be at least 1, got {explain_concurrency}")
        self._explain_slots = threading.BoundedSemaphore(explain_concurrency)
        self._explain_seconds = EXPLAIN_SECONDS
        self.torch_threads = max(1, int(torch_threads or DEFAULTS.threads_per_worker()))
        torch.set_num_threads(self.torch_threads)
        self._dispatcher_threads_set = False
        self.device = resolve_device(device)
        check_choice(runtime, self.device)
        self.int8_kernel = kernel_class(self.device)  # which int8 evaluations describe answers here
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
                                          f"no checkpoint ships for {name}: train one with `{recipe_command(name)}`")
                (log.error if name in self.required else log.info)("backend %s unavailable: %s", name, err)
                continue
            self.models[name], self.configs[name], self.tokenizer = model, config, tokenizer
            log.info("loaded %s from %s on %s (sha256 %s)", name, directory, self.device,
                     config["weights"]["sha256"][:12])
        self.runners = {name: choose_runtime(self.models[name], self.tokenizer, self.configs[name], runtime,
                                             self.device, self.torch_threads) for name in self.models}
        for name, runner in self.runners.items():
            log.info("%s runs on %s", name, runner.name)
        self.batcher = MicroBatcher(self._pass, on_pass=self._record_pass, **(batching or {}))
        for name in self.models:  # the first pass allocates and picks kernels: pay it before serving
            self.answer([self.example_question(seed=0)], name)

    def ready(self, name: str | None = None) -> bool:
        """Whether `name`, or without one every required backend, is loaded."""
        return name in self.models if name else all(n in self.models for n in self.required)

    def encode(self, questions: list, batch: bool = True) -> list[list[int]]:
        """Validate every question once into its token ids; QuestionError names the first bad one
        by its index within a batch."""
        ids = []
        for index, question in enumerate(questions):
            try:
                ids.append(self.tokenizer.encode(question))
            except QuestionError as err:
                raise QuestionError(err.code, err.message, index if batch else None) from None
        return ids

    def run(self, ids: list[list[int]], name: str) -> tuple[list[str], float]:
        """Answers for encoded questions from backend `name`, and the latency in ms of the greedy
        pass they rode in (shared with other requests' questions when the batcher joined them).
        Raises BackendUnavailable, or batching.Overloaded when the queue is full."""
        if name not in self.models:
            raise BackendUnavailable(name, self.load_errors.get(name, f"{name!r} is not a registered backend"))
        answers, latency_ms, _ = self.batcher.submit(name, ids)
        return answers, latency_ms

    def answer(self, questions: list[str], name: str) -> tuple[list[str], float]:
        """Answers for `questions` exactly as given, from one batched greedy pass (possibly shared with
        other requests' questions), and the pass's latency in ms."""
        return self.run(self.encode(questions), name)

    def respond(self, questions: list, name: str, batch: bool = False) -> list[Reply]:
        """Answer and check questions as people type them: each normalised to the trained wording
        (models.task.normalise_question), encoded, answered in one batched pass by backend `name`,
        assessed. Raises QuestionError (with the question's index in a batch), BackendUnavailable
        or batching.Overloaded."""
        asked = [self.asked(q) for q in questions]
        answers, latency_ms = self.run(self.encode(asked, batch), name)
        return [Reply(submitted, question, name, answer, self.assess(question, name), latency_ms)
                for submitted, question, answer in zip(questions, asked, answers)]

    @property
    def runtimes(self) -> dict[str, str]:
        """The runtime serving each loaded backend."""
        return {name: runner.name for name, runner in self.runners.items()}

    def _record_pass(self, name: str, questions: int, seconds: float, cpu_seconds: float) -> None:
        # an engine computes on threads of its own: the dispatcher's CPU time says nothing there
        if self.on_pass:
            self.on_pass(name, questions, seconds, cpu_seconds if self.runners[name].computes_on_caller else None)

    def _pass(self, name: str, ids: list[list[int]]) -> tuple[list[str], float]:
        """One batched greedy pass; runs only on the batcher's dispatcher thread."""
        if not self._dispatcher_threads_set:  # OpenMP's thread count is per calling thread
            torch.set_num_threads(self.torch_threads)
            self._dispatcher_threads_set = True
        return timed(self.runners[name], ids)

    def explain(self, question: str, name: str) -> Reply:
        """The reply to one question with per-character attributions of its answer, computed on the
        backend's torch float32 model (models/attribution.py). Raises QuestionError,
        BackendUnavailable, or batching.Overloaded when every explanation slot is busy."""
        self.encode([self.asked(question)], batch=False)
        if not self._explain_slots.acquire(blocking=False):
            raise Overloaded("every explanation slot is busy", max(1, math.ceil(self._explain_seconds)))
        try:
            reply, = self.respond([question], name)
            started = time.perf_counter()
            attribution = explain(self.models[name], self.tokenizer, reply.question, reply.answer)
            # Retry-After for a busy slot: a slot frees in about one explanation's time
            self._explain_seconds = 0.7 * self._explain_seconds + 0.3 * (time.perf_counter() - started)
        finally:
            self._explain_slots.release()
        reply.attribution = {**attribution, "computed_on": "torch float32", "served_by": self.runners[name].name}
        return reply

    @staticmethod
    def asked(question):
        """The wording a question is answered in: the trained form where it can be mapped to it
        (anything but a string is left for the tokenizer to refuse)."""
        return normalise_question(question) if isinstance(question, str) else question

    def compare(self, question: str, names, explain: bool = False) -> list[tuple[str, Reply | None, str | None]]:
        """One question answered (and explained) by each backend of `names` in turn: (name, reply, None),
        or (name, None, why not) where that backend is unavailable or busy. Raises QuestionError
        before any backend runs."""
        self.encode([self.asked(question)], batch=False)
        outcomes = []
        for name in names:
            try:
                reply = self.explain(question, name) if explain else self.respond([question], name)[0]
                outcomes.append((name, reply, None))
            except BackendUnavailable as err:
                outcomes.append((name, None, f"{str(err)[:1].upper()}{str(err)[1:]}"))
            except Overloaded as err:
                outcomes.append((name, None, f"{name} is busy: {err}. Try again in {err.retry_after} s."))
        return outcomes

    def assess(self, question: str, name: str) -> Assessment:
        """The exact answer and the out-of-distribution reasons for the backend's own training mix."""
        config = self.configs.get(name)
        return assess(question, training_balanced_share(config), training_beyond_share(config),
                      measured_beyond_accuracy(config))

    def describe(self) -> list[dict]:
        """What /models and the page report for each backend."""
        return describe_backends(self.configs, self.runtimes, self.load_errors, self.required, self.int8_kernel)

    @staticmethod
    def example_question(seed=None) -> str:
        """A freshly generated interpolate-distribution question."""
        (question, _), = generate("interpolate", 1, seed=seed if seed is not None else time.time_ns())
        return question
