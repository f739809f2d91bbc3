"""HTTP serving under load: real gunicorn on loopback with the shipped checkpoints, a bounded
thread-pool client at several concurrency levels, each backend in turn (alternating order),
for each server setting in turn (same questions, one run).

    python -m benchmarks.http_load [--concurrency 1,4,16,32] [--requests 200] [--max-seconds 30]
        [--settings default,torch-unbatched,one-worker-two-threads]
    python -m benchmarks.http_load --settings mine --define '{"mine": {"workers": 1, "batch_max": 8}}'

The server settings are the named list SETTINGS below (ServerSetting: workers, torch threads each,
the batch limit, the runtime, the batcher's window, keep-alive, per-worker sockets, gunicorn's own
gthread worker instead of the balanced one, the balanced worker's accept wait); --define adds
settings as JSON, validated by the same model. Unset fields leave the server's own default
(serving/settings.py).
`--interleave` restarts the settings in turn for every repeat (alternating order) instead of running
each setting's repeats on one server start, so minutes of VM drift fall on every setting alike.
Clients are closed-loop: each of N threads sends its next request when its last one is answered.
Reports answers/s, latency p50/p99, errors (503s counted apart), worker RSS before/after, the
CPU share of client and server (they share the cores), the server's CPU per answer, the mean
questions per batched pass (from /metrics), and the HTTP ceiling: GET /healthz requests/s from
the same clients. Loopback only. `--device cuda` serves on the GPU (PLACEVALUE_DEVICE; the
result is http_load_gpu.json).
"""
import argparse
import http.client
import itertools
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import psutil
import requests
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import RESULTS, environment, percentile, save
from models.task import generate

ROOT = Path(__file__).resolve().parent.parent

MODULE = "benchmarks.http_load"


def workers(master_pid: int) -> list[psutil.Process]:
    """The gunicorn master's worker processes alive now."""
    try:
        return psutil.Process(master_pid).children()
    except psutil.NoSuchProcess:
        return []


def worker_pids(master_pid: int) -> list[int]:
    return sorted(worker.pid for worker in workers(master_pid))


def worker_rss_mib(master_pid: int) -> dict:
    """Resident memory of each gunicorn worker."""
    rss = {}
    for worker in workers(master_pid):
        try:
            rss[str(worker.pid)] = worker.memory_info().rss / 2**20
        except psutil.NoSuchProcess:  # exited since listed
            continue
    return rss


class ServerSetting(BaseModel):
    """One server configuration under test; None leaves the server's own default (serving/settings.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(2, ge=1)
    torch_threads: int = Field(1, ge=1)
    batch_max: int = Field(64, ge=1)  # 1: every request runs its own pass (no cross-request batching)
    runtime: str = "auto"  # PLACEVALUE_RUNTIME
    batch_delay_ms: float | None = Field(None, ge=0)  # the longest a pass waits for the callers it expects
    expect_callers: bool | None = None  # False: the window is fixed, whoever is expected
    keepalive_s: int | None = Field(None, ge=0)  # 0: a connection per request
    reuse_port: bool | None = None  # True: a listening socket per worker (the kernel spreads connections)
    worker_class: Literal["gthread"] | None = None  # gunicorn's own worker instead of the balanced one
    accept_defer_ms: float | None = Field(None, ge=0)  # the balanced worker's wait before it accepts

    @model_validator(mode="after")
    def _accept_wait_needs_the_balanced_worker(self):
        if self.accept_defer_ms is not None and self.worker_class == "gthread":
            raise ValueError("an accept wait needs the balanced worker: gunicorn's gthread worker has none")
        return self

    def environment(self, device: str) -> dict:
        """The PLACEVALUE_ and GUNICORN_ variables that set it (and only it: nothing else is inherited)."""
        env = {"PLACEVALUE_DEVICE": device, "GUNICORN_WORKERS": str(self.workers),
               "PLACEVALUE_TORCH_THREADS": str(self.torch_threads), "PLACEVALUE_BATCH_MAX": str(self.batch_max),
               "PLACEVALUE_RUNTIME": self.runtime}
        optional = {"PLACEVALUE_BATCH_DELAY_MS": self.batch_delay_ms,
                    "PLACEVALUE_BATCH_EXPECT_CALLERS": None if self.expect_callers is None
                    else str(self.expect_callers).lower(),
                    "GUNICORN_KEEPALIVE": self.keepalive_s, "GUNICORN_REUSE_PORT": "true" if self.reuse_port else None,
                    "GUNICORN_WORKER_CLASS": self.worker_class, "PLACEVALUE_ACCEPT_DEFER_MS": self.accept_defer_ms}
        return {**env, **{k: str(v) for k, v in optional.items() if v is not None}}

    def recorded(self) -> dict:
        """The fields it sets, for the result file."""
        return self.model_dump(exclude_none=True)


CT2 = {"runtime": "ctranslate2"}
GTHREAD = {**CT2, "worker_class": "gthread"}
# The settings the report and its studies measured, by name (2 workers, 1 thread each, batches of up to 64
# and the runtime each backend has earned unless a setting says otherwise)
SETTINGS = {name: ServerSetting(**fields) for name, fields in {
    "default": {},
    "window-10ms": {"batch_delay_ms": 10, "expect_callers": True},
    "one-worker-two-threads": {"workers": 1, "torch_threads": 2},
    "torch-unbatched": {"runtime": "torch", "batch_max": 1},
    "ctranslate2": CT2,
    "ctranslate2-int8": {"runtime": "ctranslate2-int8"},
    "ctranslate2-fixed-window-2ms": {**CT2, "batch_delay_ms": 2, "expect_callers": False},
    "ctranslate2-window-10ms": {**CT2, "batch_delay_ms": 10, "expect_callers": True},
    "ctranslate2-one-worker-two-threads": {**CT2, "workers": 1, "torch_threads": 2},
    "ctranslate2-keepalive-2s": {**CT2, "keepalive_s": 2},
    "ctranslate2-gthread-keepalive-2s": {**GTHREAD, "keepalive_s": 2},
    "ctranslate2-gthread-no-keepalive": {**GTHREAD, "keepalive_s": 0},
    "ctranslate2-gthread-reuse-port": {**GTHREAD, "reuse_port": True},
}.items()}
DEFINED = TypeAdapter(dict[str, ServerSetting])


def chosen_settings(names: str, define: str | None) -> dict:
    """The named settings, from SETTINGS and the --define JSON object; a clear error for others."""
    known = dict(SETTINGS)
    if define:
        try:
            known.update(DEFINED.validate_json(define))
        except ValidationError as error:
            raise SystemExit(f"error: --define: {error}")
    unknown = [name for name in names.split(",") if name not in known]
    if unknown:
        raise SystemExit(f"error: unknown setting {', '.join(unknown)}; known: {', '.join(known)}")
    return {name: known[name] for name in names.split(",")}


def start_server(port: int, setting: ServerSetting, checkpoints: str, device: str = "cpu"):
    """gunicorn with `setting` on loopback, once /readyz answers 200; returns (process, url)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PLACEVALUE_", "GUNICORN_"))}
    env = {**inherited, **setting.environment(device), "GUNICORN_BIND": f"127.0.0.1:{port}",
           "GUNICORN_ACCESSLOG": "", "PLACEVALUE_CHECKPOINT_DIR": checkpoints}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            # /readyz is 200 once every worker has loaded: clients that connect earlier all land on
            # the first worker loaded and, kept alive, stay there
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("gunicorn did not become ready")


class Client:
    """One keep-alive HTTP/1.1 connection per client thread, on the standard library's http.client.

    The client shares the server's two cores, so it must be cheap: `requests` costs ~2 ms of CPU
    per request here, http.client ~0.3-0.5 ms (both measured against GET /healthz)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.connection = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (0, 1):
            reused = self.connection is not None
            if not reused:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.connection.request(method, path, payload, headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as err:
                self.connection.close()
                self.connection = None
                # the server closes idle keep-alive connections; a reused one may be stale, so one
                # retry on a fresh connection, as HTTP client pools do. Anything else is an error.
                stale = isinstance(err, (ConnectionError, http.client.HTTPException)) and reused
                if not stale or attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def connections_per_worker(master_pid: int, port: int, established_only: bool = True) -> dict:
    """Connections to `port` that each gunicorn worker holds (pid -> count): established ones, or with
    `established_only=False` also those the client has closed and the worker has not yet."""
    held = {}
    for worker in workers(master_pid):
        try:
            connections = worker.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        held[worker.pid] = sum(1 for c in connections if c.laddr and c.laddr.port == port
                               and (c.status == psutil.CONN_ESTABLISHED if established_only
                                    else c.status != psutil.CONN_LISTEN))
    return held


def process_cpu_seconds(pids) -> dict:
    """User + system CPU seconds of each process (gone ones count 0)."""
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            seconds[pid] = times.user + times.system
        except psutil.NoSuchProcess:
            seconds[pid] = 0.0
    return seconds


def server_pids(master_pid: int) -> list[int]:
    return [master_pid, *worker_pids(master_pid)]


def pass_totals(url: str, model: str) -> dict:
    """Totals of the server's batched passes for `model` so far, from /metrics: questions, passes,
    their wall seconds and the CPU seconds of the thread that ran them."""
    text = Client(url).request("GET", "/metrics")[1].decode()
    totals = {"questions": 0.0, "passes": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}
    wanted = {("placevalue_pass_questions", "sum"): "questions", ("placevalue_pass_questions", "count"): "passes",
              ("placevalue_pass_seconds", "sum"): "seconds", ("placevalue_pass_cpu_seconds", "total"): "cpu_seconds"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = wanted.get((family.name, sample.name.rsplit("_", 1)[-1]))
            if key and sample.labels.get("model") == model:
                totals[key] += sample.value
    return totals


def closed_loop(url, items, concurrency, max_seconds, one) -> tuple[list, float, float]:
    """`concurrency` client threads, each sending its next request as soon as its last one is
    answered, until `items` run out or max_seconds pass. Returns (results of `one`, elapsed
    seconds, client CPU seconds)."""
    pending, lock, results = iter(items), threading.Lock(), []
    deadline = time.monotonic() + max_seconds

    def client_thread():
        client = Client(url)
        while time.monotonic() < deadline:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            outcome = one(client, item)
            with lock:
                results.append(outcome)

    usage_before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    threads = [threading.Thread(target=client_thread) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    return results, time.perf_counter() - start, client_cpu


def load(url, model, questions, concurrency, total, max_seconds, pids=()) -> dict:
    """`total` requests (or until max_seconds) from `concurrency` closed-loop clients, with the CPU
    each side spent: the client shares the cores, so its share caps what the server can reach."""
    def one(client, item):
        question, answer = item
        start = time.perf_counter()
        try:
            status, body = client.request("POST", "/answer", {"question": question, "model": model})
            correct = status == 200 and json.loads(body)["answer"] == answer
        except (OSError, http.client.HTTPException, ValueError):
            status, correct = None, False
        return time.perf_counter() - start, status, correct

    passes_before = pass_totals(url, model)
    server_before = process_cpu_seconds(pids)
    # where the clients' connections sit, looked at once while they run
    held = {}
    census = threading.Timer(min(1.0, max_seconds / 2),
                             lambda: held.update(connections_per_worker(pids[0], urlsplit(url).port)))
    if pids:
        census.start()
    results, elapsed, client_cpu = closed_loop(url, questions[:total], concurrency, max_seconds, one)
    census.cancel()
    server_after = process_cpu_seconds(pids)
    # per process: workers keep the keep-alive connections they accepted, so one can idle while another queues
    per_process = [(server_after[pid] - server_before.get(pid, 0.0)) / elapsed for pid in pids]
    server_cpu = sum(per_process) * elapsed
    passes_run = {k: v - passes_before[k] for k, v in pass_totals(url, model).items()}
    latencies = [latency * 1e3 for latency, _, _ in results]
    shed = sum(status == 503 for _, status, _ in results)
    errors = sum(status not in (200, 503) for _, status, _ in results)
    wrong = sum(status == 200 and not correct for _, status, correct in results)
    answered = len(results) - errors - shed
    cores = os.cpu_count() or 1
    return {"requests": len(results), "answers_per_second": answered / elapsed, "errors": errors, "shed_503": shed,
            "wrong_answers": wrong, "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "client_cpu_share": client_cpu / (elapsed * cores),
            "server_cpu_share": server_cpu / (elapsed * cores) if pids else None,
            "server_cpu_ms_per_answer": server_cpu * 1e3 / answered if pids and answered else None,
            "worker_cpu_cores": [round(share, 3) for share in per_process[1:]],
            "worker_connections": [held.get(pid) for pid in pids[1:]] if held else None,
            "mean_pass_questions": passes_run["questions"] / passes_run["passes"] if passes_run["passes"] else None,
            # the pass threads' time computing, per answer and as a share of the workers' wall time:
            # what the passes cost against the same passes in process, and how long they stood idle
            "pass_ms_per_answer": passes_run["seconds"] * 1e3 / passes_run["questions"]
            if passes_run["questions"] else None,
            "pass_busy_share": passes_run["seconds"] / (elapsed * (len(pids) - 1)) if len(pids) > 1 else None,
            # below 1: the pass thread waited (for the GIL, held by request threads between its
            # kernels); None where an engine's own threads computed (CTranslate2)
            "pass_cpu_share": passes_run["cpu_seconds"] / passes_run["seconds"] if passes_run["cpu_seconds"] else None}


def http_ceiling(url, concurrency, seconds) -> dict:
    """Requests/s of GET /healthz from the same clients: the HTTP stack and the client with no model,
    the most any backend could be served at on these cores."""
    def one(client, path):
        return client.request("GET", path)[0]

    results, elapsed, client_cpu = closed_loop(url, itertools.repeat("/healthz"), concurrency, seconds, one)
    return {"requests_per_second": sum(status == 200 for status in results) / elapsed,
            "client_cpu_share": client_cpu / (elapsed * (os.cpu_count() or 1))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--requests", type=int, default=200, help="requests per backend and level")
    parser.add_argument("--max-seconds", type=float, default=30)
    parser.add_argument("--settings", default="default,torch-unbatched,one-worker-two-threads",
                        help=f"server settings compared in turn, by name: {', '.join(SETTINGS)} or --define's")
    parser.add_argument("--define", default=None,
                        help="more named settings as a JSON object of ServerSetting fields, e.g. "
                             "'{\"mine\": {\"workers\": 1, \"batch_max\": 8}}'")
    parser.add_argument("--merge", action="store_true",
                        help="keep the earlier result's settings that this run does not measure")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each backend and level this many times (alternating order); the median is kept")
    parser.add_argument("--interleave", action="store_true",
                        help="restart the settings in turn for every repeat (alternating order) instead of measuring "
                             "each setting's repeats on one server start: a fairer comparison of settings")
    parser.add_argument("--ceiling-seconds", type=float, default=3,
                        help="how long GET /healthz is driven at each level to measure the HTTP ceiling")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the server's torch models run (PLACEVALUE_DEVICE)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    name = "http_load_gpu" if args.device == "cuda" else "http_load_cpu"
    questions = generate("interpolate", args.requests, seed=5151)
    environment_now = environment(args.device, MODULE, argv)
    result = {"environment": environment_now, "settings": {}}
    out = Path(args.out or RESULTS)
    if args.merge and (out / f"{name}.json").exists():
        # keep the earlier result's other settings, each with the run that measured it
        previous = json.loads((out / f"{name}.json").read_text())
        result["settings"] = {name: {"measured": previous["environment"], **setting}
                              for name, setting in previous.get("settings", {}).items()}
    settings = chosen_settings(args.settings, args.define)
    setting_names = list(settings)
    levels = list(map(int, args.concurrency.split(",")))
    # visits: (setting, repeats measured on this server start). Interleaved, every repeat restarts
    # each setting in turn (alternating order), so the VM's drift over minutes falls on all alike.
    visits = ([(name_, 1) for repeat in range(args.repeats)
               for name_ in (setting_names if repeat % 2 == 0 else setting_names[::-1])]
              if args.interleave else [(name_, args.repeats) for name_ in setting_names])
    runs = {name_: {level: {} for level in levels} for name_ in setting_names}
    visited = set()
    for visit, (setting_name, repeats) in enumerate(visits):
        setting = settings[setting_name]
        process, url = start_server(args.port, setting, args.checkpoints, args.device)
        try:
            if setting_name not in visited:  # its first start in this run replaces any merged earlier result
                visited.add(setting_name)
                result["settings"][setting_name] = {
                    **setting.recorded(), "measured": environment_now, "levels": {}, "interleaved": args.interleave,
                    "rss_before_mib": worker_rss_mib(process.pid)}
            row_set = result["settings"][setting_name]
            served = [m for m in requests.get(url + "/models", timeout=10).json()["models"] if m["ready"]]
            names = tuple(m["name"] for m in served)
            # what ran each backend's passes (RUNTIME=auto picks per backend and CPU)
            row_set["served_runtimes"] = {m["name"]: m.get("runtime") for m in served}
            for i, level in enumerate(levels):
                ceiling = http_ceiling(url, level, args.ceiling_seconds)
                row_set.setdefault("http_ceiling", {})[level] = ceiling
                print(f"{setting_name} {level:>3} clients GET /healthz  {ceiling['requests_per_second']:6.1f} "
                      f"requests/s  client CPU {ceiling['client_cpu_share']:.0%}", flush=True)
                by_model = runs[setting_name][level]
                for repeat in range(repeats):
                    for model in (names if (i + repeat + visit) % 2 == 0 else names[::-1]):
                        row = load(url, model, questions, level, args.requests, args.max_seconds,
                                   server_pids(process.pid))
                        by_model.setdefault(model, []).append(row)
                        print(f"{setting_name} {level:>3} clients {model:<12} {row['answers_per_second']:6.1f} "
                              f"answers/s  p50 {row['p50_ms']:.0f} ms  p99 {row['p99_ms']:.0f} ms  errors "
                              f"{row['errors']}  503 {row['shed_503']}  wrong {row['wrong_answers']}  client CPU "
                              f"{row['client_cpu_share']:.0%}  server CPU {row['server_cpu_share']:.0%} "
                              f"({row['server_cpu_ms_per_answer'] or 0:.1f} ms/answer)  mean pass "
                              f"{row['mean_pass_questions'] or 0:.1f} ({row['pass_ms_per_answer'] or 0:.1f} ms/answer, busy "
                              f"{row['pass_busy_share'] or 0:.0%}, on CPU {row['pass_cpu_share'] or 0:.0%})  workers {row['worker_cpu_cores']} cores, "
                              f"{row['worker_connections']} connections",
                              flush=True)
                # the median run by throughput (this VM's neighbours move a single run by +-20%)
                row_set["levels"][level] = {model: {
                    **sorted(rows, key=lambda r: r["answers_per_second"])[(len(rows) - 1) // 2],
                    "answers_per_second_runs": [round(r["answers_per_second"], 1) for r in rows]}
                    for model, rows in by_model.items()}
            row_set["rss_after_mib"] = worker_rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    save(name, result, out)


if __name__ == "__main__":
    main()
