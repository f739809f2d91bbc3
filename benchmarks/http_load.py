"""HTTP serving under load: real gunicorn on loopback with the shipped checkpoints, a bounded
thread-pool client at several concurrency levels, each backend in turn (alternating order),
for each server setting in turn (same questions, one run).

    python -m benchmarks.http_load [--concurrency 1,4,16,32] [--requests 200] [--max-seconds 30]
        [--settings w2t1b1,w2t1b64,w1t2b64]

A setting `wWtTbB` is W gunicorn workers, T torch threads each, and cross-request batches of up
to B questions (b1: every request runs its own pass, the service before micro-batching);
`+RUNTIME` adds PLACEVALUE_RUNTIME (e.g. `w1t2b64+ctranslate2-int8`).
Reports answers/s, latency p50/p99, errors (503s counted apart) and worker RSS before/after.
Loopback only.
"""
import argparse
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.common import RESULTS, environment, percentile, save
from models.task import generate

ROOT = Path(__file__).resolve().parent.parent

MODULE = "benchmarks.http_load"


def worker_rss_mib(master_pid: int) -> dict:
    """Resident memory of each gunicorn worker (children of the master), from /proc."""
    rss = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == master_pid:
            rss[status.parent.name] = int(fields["VmRSS"].split()[0]) / 1024
    return rss


def parse_setting(text: str) -> dict:
    """`w2t1b64` -> {"workers": 2, "torch_threads": 1, "batch_max": 64, "runtime": "torch"};
    `w1t2b64+ctranslate2-int8` sets PLACEVALUE_RUNTIME too."""
    match = re.fullmatch(r"w(\d+)t(\d+)b(\d+)(?:\+([a-z0-9-]+))?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"a setting looks like w2t1b64 or w1t2b64+ctranslate2-int8 (workers, "
                                         f"threads, batch, runtime), got {text!r}")
    workers, threads, batch = map(int, match.groups()[:3])
    return {"workers": workers, "torch_threads": threads, "batch_max": batch, "runtime": match.group(4) or "torch"}


def start_server(port: int, workers: int, checkpoints: str, torch_threads: int | None = None, batch_max: int = 64,
                 runtime: str = "torch"):
    env = dict(os.environ, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=str(workers),
               GUNICORN_ACCESSLOG="", PLACEVALUE_CHECKPOINT_DIR=checkpoints, PLACEVALUE_BATCH_MAX=str(batch_max),
               PLACEVALUE_TORCH_THREADS=str(torch_threads or max(1, (os.cpu_count() or 1) // workers)),
               PLACEVALUE_RUNTIME=runtime)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("gunicorn did not become ready")


def load(url, model, questions, concurrency, total, max_seconds) -> dict:
    """`total` requests (or until max_seconds) from `concurrency` client threads."""
    local = threading.local()  # one keep-alive session per client thread

    def one(item):
        question, answer = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
        session = local.session
        start = time.perf_counter()
        status = None
        try:
            r = session.post(url + "/answer", json={"question": question, "model": model}, timeout=30)
            status = r.status_code
            correct = status == 200 and r.json()["answer"] == answer
        except requests.RequestException:
            correct = False
        return time.perf_counter() - start, status, correct

    deadline = time.monotonic() + max_seconds
    latencies, errors, shed, wrong = [], 0, 0, 0
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        pending = iter(questions[:total])
        futures = [pool.submit(one, next(pending)) for _ in range(min(concurrency, total))]
        while futures:
            latency, status, correct = futures.pop(0).result()
            latencies.append(latency * 1e3)
            shed += status == 503
            errors += status not in (200, 503)
            wrong += status == 200 and not correct
            item = next(pending, None)
            if item is not None and time.monotonic() < deadline:
                futures.append(pool.submit(one, item))
    elapsed = time.perf_counter() - start
    answered = len(latencies) - errors - shed
    return {"requests": len(latencies), "answers_per_second": answered / elapsed, "errors": errors, "shed_503": shed,
            "wrong_answers": wrong, "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--requests", type=int, default=200, help="requests per backend and level")
    parser.add_argument("--max-seconds", type=float, default=30)
    parser.add_argument("--settings", default="w2t1b1,w2t1b64,w1t2b64",
                        help="server settings compared in turn (wWtTbB: workers, torch threads, batch max)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    questions = generate("interpolate", args.requests, seed=5151)
    result = {"environment": environment("cpu", MODULE, argv), "settings": {}}
    for setting_name in args.settings.split(","):
        setting = parse_setting(setting_name)
        process, url = start_server(args.port, setting["workers"], args.checkpoints, setting["torch_threads"],
                                    setting["batch_max"], setting["runtime"])
        try:
            row_set = {**setting, "levels": {}, "rss_before_mib": worker_rss_mib(process.pid)}
            names = tuple(m["name"] for m in requests.get(url + "/models", timeout=10).json()["models"] if m["ready"])
            for i, level in enumerate(map(int, args.concurrency.split(","))):
                row_set["levels"][level] = {}
                for model in (names if i % 2 == 0 else names[::-1]):
                    row = load(url, model, questions, level, args.requests, args.max_seconds)
                    row_set["levels"][level][model] = row
                    print(f"{setting_name} {level:>3} clients {model:<12} {row['answers_per_second']:6.1f} answers/s  "
                          f"p50 {row['p50_ms']:.0f} ms  p99 {row['p99_ms']:.0f} ms  errors {row['errors']}  "
                          f"503 {row['shed_503']}  wrong {row['wrong_answers']}", flush=True)
            row_set["rss_after_mib"] = worker_rss_mib(process.pid)
            result["settings"][setting_name] = row_set
        finally:
            process.terminate()
            process.wait(timeout=30)
    save("http_load_cpu", result, args.out or RESULTS)


if __name__ == "__main__":
    main()
