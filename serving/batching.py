"""Dynamic micro-batching across requests, with a bounded queue.

One queue for every request's questions; a single dispatcher thread takes the oldest job, holds
the pass open for more jobs for the same backend, and runs them as one batched pass, so concurrent
requests share passes instead of running many batch-1 passes. A pass is held open until as many
requests wait as it had callers last time (callers that come straight back then join it instead
of queueing behind it), or `max_batch` questions wait, or `max_delay_ms` passes; a lone caller's
pass starts at once. `expect_callers=False` always waits the full window.

Load shedding: beyond `queue_limit` waiting questions, or after `max_wait_ms` without its pass
starting, a request gets Overloaded (the API answers 503 with Retry-After) instead of waiting
behind everyone. This module knows nothing of torch or of backends: `run_batch(name, items)`
does the work.
"""
import collections
import math
import threading
import time
from dataclasses import dataclass, field

from serving.settings import DEFAULTS


class Overloaded(Exception):
    """The queue is full, or a request waited past the bound; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


# Why a held pass stopped waiting: as many callers as expected had joined, it was full, its window
# ran out, or the batcher was closing
CLOSE_REASONS = ("callers", "full", "window", "closing")


@dataclass
class BatchStats:
    """What the passes so far looked like (read by tests and by the service's pass counters)."""
    passes: int = 0
    questions: int = 0
    largest: int = 0
    shed: int = 0
    expired: int = 0
    closed_by: collections.Counter = field(default_factory=collections.Counter)  # CLOSE_REASONS


@dataclass(eq=False)
class _Job:
    name: str
    items: list
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    result: object = None
    error: BaseException | None = None
    latency_ms: float = 0.0
    batch_questions: int = 0


class MicroBatcher:
    """Runs `run_batch(name, items) -> (results, latency_ms)` over jobs collected from many
    threads; results come back to each job in its items' order. `on_pass(name, questions,
    seconds, cpu_seconds)` hears of every pass that ran (cpu_seconds: the dispatcher thread's)."""

    def __init__(self, run_batch, max_batch: int = DEFAULTS.batch_max,
                 max_delay_ms: float = DEFAULTS.batch_delay_ms, queue_limit: int = DEFAULTS.queue_limit,
                 max_wait_ms: float = DEFAULTS.queue_max_wait_ms, on_pass=None,
                 expect_callers: bool = DEFAULTS.batch_expect_callers):
        if max_batch < 1 or queue_limit < 1 or max_delay_ms < 0 or max_wait_ms <= 0:
            raise ValueError(f"need max_batch >= 1, queue_limit >= 1, max_delay_ms >= 0, max_wait_ms > 0; got "
                             f"{max_batch}, {queue_limit}, {max_delay_ms}, {max_wait_ms}")
        self.run_batch, self.on_pass = run_batch, on_pass
        self.max_batch, self.queue_limit = max_batch, queue_limit
        self.max_delay, self.max_wait = max_delay_ms / 1000, max_wait_ms / 1000
        self.expect_callers = expect_callers
        self.stats = BatchStats()
        self._callers: dict[str, int] = {}  # per backend: the callers its next pass waits for
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_questions = 0
        self._seconds_per_question = 0.02  # refined from every pass; sizes Retry-After
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, name: str, items: list):
        """Block until `items` are answered by backend `name`; returns (results, latency_ms,
        questions in the pass). Raises Overloaded, or whatever run_batch raised for this pass."""
        now = time.monotonic()
        job = _Job(name, list(items), deadline=now + self.max_wait)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            # a request larger than the whole queue is still served when nothing else waits
            if self._queue and self._queued_questions + len(job.items) > self.queue_limit:
                self.stats.shed += 1
                raise Overloaded(f"server busy: {self._queued_questions} questions already queued "
                                 f"(limit {self.queue_limit})", self._retry_after())
            self._queue.append(job)
            self._queued_questions += len(job.items)
            self._cond.notify_all()
        if not job.done.wait(self.max_wait):
            with self._cond:
                if not job.started:  # still queued at the bound: give up its place
                    self._queue.remove(job)
                    self._queued_questions -= len(job.items)
                    self.stats.expired += 1
                    raise Overloaded(f"server busy: not started within {self.max_wait * 1000:.0f} ms",
                                     self._retry_after())
            job.done.wait()  # its pass is running: it ends in one pass's time
        if job.error is not None:
            raise job.error
        return job.result, job.latency_ms, job.batch_questions

    def queued(self) -> int:
        """Questions waiting for a pass."""
        with self._cond:
            return self._queued_questions

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _retry_after(self) -> int:
        """Whole seconds until the current queue should have drained (at least 1)."""
        return max(1, math.ceil(self._queued_questions * self._seconds_per_question))

    def _take(self) -> list[_Job]:
        """Under the lock: the oldest job and the queued jobs for the same backend that fit in one pass."""
        first = self._queue[0]
        batch, size = [], 0
        for job in list(self._queue):
            if job.name != first.name:
                continue
            if batch and size + len(job.items) > self.max_batch:
                break
            batch.append(job)
            size += len(job.items)
        for job in batch:
            self._queue.remove(job)
            job.started = True
        self._queued_questions -= size
        return batch

    def _ready_jobs(self, name: str) -> int:
        return sum(job.name == name for job in self._queue)

    def _ready_questions(self, name: str) -> int:
        return sum(len(job.items) for job in self._queue if job.name == name)

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                # hold the pass open briefly so the other callers can join it (module docstring)
                name, opened = self._queue[0].name, time.monotonic()
                callers = self._callers.get(name, 1) if self.expect_callers else math.inf
                while (reason := self._close_reason(name, callers, opened)) is None:
                    self._cond.wait(opened + self.max_delay - time.monotonic())
                self.stats.closed_by[reason] += 1
                batch = self._take()
            self._run(batch)

    def _close_reason(self, name: str, callers: float, opened: float) -> str | None:
        """Under the lock: why the pass held open since `opened` should start now (CLOSE_REASONS), or None."""
        if self._closed:
            return "closing"
        if self._ready_questions(name) >= self.max_batch:
            return "full"
        if self._ready_jobs(name) >= callers:
            return "callers"
        if time.monotonic() >= opened + self.max_delay:
            return "window"
        return None

    def _run(self, batch: list[_Job]) -> None:
        items = [item for job in batch for item in job.items]
        # this thread's CPU time: a pass that waits on the GIL (request threads hold it between
        # the pass's kernels) takes longer than it computes
        cpu_start = time.thread_time()
        try:
            results, latency_ms = self.run_batch(batch[0].name, items)
        except BaseException as err:  # every waiting request gets the pass's error, none hangs
            for job in batch:
                job.error = err
                job.done.set()
            return
        self._seconds_per_question = 0.8 * self._seconds_per_question + 0.2 * latency_ms / 1000 / len(items)
        self.stats.passes += 1
        self.stats.questions += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        if self.on_pass:
            self.on_pass(batch[0].name, len(items), latency_ms / 1000, time.thread_time() - cpu_start)
        with self._cond:  # this pass's callers will be back, and those that queued meanwhile are waiting
            self._callers[batch[0].name] = len(batch) + self._ready_jobs(batch[0].name)
        start = 0
        for job in batch:
            job.result = results[start:start + len(job.items)]
            job.latency_ms, job.batch_questions = latency_ms, len(items)
            start += len(job.items)
            job.done.set()
