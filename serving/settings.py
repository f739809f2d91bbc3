"""Serving settings: one pydantic-settings class per process kind, one set of defaults, one parser.

ServingSettings: what a serving process runs with. The app factory reads it from Flask config
(keys are the field names in upper case) after Flask has read PLACEVALUE_ variables; gunicorn's
worker class and the micro-batcher take their defaults from it. GunicornSettings: gunicorn.conf.py's
own, from GUNICORN_ variables. Both parse values the same way (pydantic: "true", "yes", "1" are true).
"""
import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """What a serving process runs with; see the README's serving section."""

    model_config = SettingsConfigDict(env_prefix="PLACEVALUE_", frozen=True, extra="ignore")

    checkpoint_dir: str = "checkpoints"
    default_model: str | None = None  # None: the registry's default backend
    # intra-op threads per worker; 0: the cores divided by the workers, so workers x threads never
    # exceeds the cores (the classic oversubscription of torch under gunicorn)
    torch_threads: int = Field(0, ge=0)
    max_batch_questions: int = Field(256, ge=1)
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
    # how long a worker holding more connections than a sibling waits before accepting a new one
    # (app/balanced_worker.py)
    accept_defer_ms: float = Field(1.0, ge=0)

    def threads_per_worker(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 1) // max(1, self.server_workers))

    def batching(self) -> dict:
        """The MicroBatcher's keyword arguments."""
        return {"max_batch": self.batch_max, "max_delay_ms": self.batch_delay_ms, "queue_limit": self.queue_limit,
                "max_wait_ms": self.queue_max_wait_ms, "expect_callers": self.batch_expect_callers}

    @classmethod
    def flask_defaults(cls) -> dict:
        return {name.upper(): field.default for name, field in cls.model_fields.items()}

    @classmethod
    def from_mapping(cls, mapping) -> "ServingSettings":
        """From Flask config (upper-case keys, as Flask read them from the environment); a ValueError
        names the key of the first value that does not parse."""
        values = {name: mapping[name.upper()] for name in cls.model_fields if name.upper() in mapping}
        try:
            return cls(**values)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"{str(first['loc'][0]).upper()}: {first['msg']} (got {first.get('input')!r})") from None

    @classmethod
    def from_env(cls, environ=None) -> "ServingSettings":
        """From PLACEVALUE_ variables of `environ` (default: this process's environment)."""
        if environ is None:
            return cls()
        prefix = "PLACEVALUE_"
        return cls.from_mapping({key[len(prefix):]: value for key, value in environ.items() if key.startswith(prefix)})


# the defaults themselves (no environment read): what a component built without settings runs with
DEFAULTS = ServingSettings.model_construct()


class GunicornSettings(BaseSettings):
    """gunicorn.conf.py's own settings, from GUNICORN_ variables."""

    model_config = SettingsConfigDict(env_prefix="GUNICORN_", frozen=True, extra="ignore")

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
