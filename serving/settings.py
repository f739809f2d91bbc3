"""Serving settings: one dataclass, one set of defaults, read from the environment.

The app factory (Flask config keys are the field names in upper case, environment variables the
same with the PLACEVALUE_ prefix), gunicorn.conf.py (GUNICORN_ variables) and the micro-batcher
all take their defaults from here.
"""
import json
import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServingSettings:
    """What a serving process runs with; see the README's serving section."""

    checkpoint_dir: str = "checkpoints"
    default_model: str | None = None  # None: the registry's default backend
    # intra-op threads per worker; 0: the cores divided by the workers, so workers x threads never
    # exceeds the cores (the classic oversubscription of torch under gunicorn)
    torch_threads: int = 0
    max_batch_questions: int = 256
    max_content_length: int = 64 * 1024  # bytes; Flask answers 413 above it
    required_models: str = ""  # comma-separated backends /readyz waits for; empty: every shipped one
    device: str = "auto"  # auto: the GPU when torch sees one, else the CPU
    runtime: str = "auto"  # one of models.runtimes.CHOICES
    # cross-request micro-batching (serving/batching.py): questions per pass (1: each request alone), the
    # longest a pass waits for more requests, whether it stops waiting once as many requests wait as
    # it had callers last time, the queue bound beyond which requests get 503, and how long a request
    # may wait for its pass to start before it gets 503
    batch_max: int = 64
    batch_delay_ms: float = 2.0
    batch_expect_callers: bool = True
    queue_limit: int = 256
    queue_max_wait_ms: float = 2000.0
    # explanations (POST /explain) at once per worker; beyond it 503 with Retry-After
    explain_concurrency: int = 1
    # processes serving the app: gunicorn.conf.py's post_fork hook sets it from the arbiter, so
    # /readyz waits for the workers gunicorn really runs
    server_workers: int = 1

    def threads_per_worker(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 1) // max(1, self.server_workers))

    def batching(self) -> dict:
        """The MicroBatcher's keyword arguments."""
        return {"max_batch": self.batch_max, "max_delay_ms": self.batch_delay_ms, "queue_limit": self.queue_limit,
                "max_wait_ms": self.queue_max_wait_ms, "expect_callers": self.batch_expect_callers}

    @classmethod
    def flask_defaults(cls) -> dict:
        return {f.name.upper(): f.default for f in fields(cls)}

    @classmethod
    def from_mapping(cls, mapping) -> "ServingSettings":
        """From Flask config (upper-case keys); values from the environment arrive as JSON or strings."""
        values = {}
        for f in fields(cls):
            value = mapping.get(f.name.upper(), f.default)
            kind = type(f.default) if f.default is not None else str
            if kind is bool and not isinstance(value, bool):
                if str(value).lower() not in ("1", "0", "true", "false"):
                    raise ValueError(f"{f.name.upper()} must be true or false, got {value!r}")
                value = str(value).lower() in ("1", "true")
            elif value is not None and not isinstance(value, kind):
                value = kind(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def from_env(cls, environ=os.environ) -> "ServingSettings":
        prefix = "PLACEVALUE_"
        mapping = {}
        for key, raw in environ.items():
            if key.startswith(prefix):
                try:  # as Flask's from_prefixed_env reads them
                    mapping[key[len(prefix):]] = json.loads(raw)
                except ValueError:
                    mapping[key[len(prefix):]] = raw
        return cls.from_mapping(mapping)


@dataclass(frozen=True)
class GunicornSettings:
    """gunicorn.conf.py's own settings, from GUNICORN_ variables."""

    bind: str = "127.0.0.1:8000"
    workers: int = 2
    # request threads mostly wait for their pass, hence many of them
    threads: int = 32
    # gunicorn's gthread worker, except that a worker holding more connections than a sibling leaves a
    # new one to it (app/balanced_worker.py); "gthread" runs gunicorn's own
    worker_class: str = "app.balanced_worker.BalancedThreadWorker"
    timeout: int = 60
    graceful_timeout: int = 30
    keepalive: int = 2
    reuse_port: bool = False
    accesslog: str = "-"  # empty: no access log

    @classmethod
    def from_env(cls, environ=os.environ) -> "GunicornSettings":
        values = {}
        for f in fields(cls):
            raw = environ.get(f"GUNICORN_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default)
            values[f.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        return cls(**values)
