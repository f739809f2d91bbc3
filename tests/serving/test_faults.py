"""Faults: a save killed half-way, a graceful reload onto retrained weights, a worker killed under load."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.http_load import worker_pids
from models.checkpoint import load_checkpoint, save_checkpoint
from models.tokenizer import Tokenizer
from tests.conftest import start_gunicorn, tiny_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
Q = "What is the tens digit of 89290?"


def test_kill_during_save_leaves_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tiny_model("memsizer", seed=1), tmp_path, Tokenizer())
    before = load_checkpoint(tmp_path)[2]["weights"]["sha256"]
    # a child that starts overwriting the checkpoint, with a save slowed down half-way
    script = textwrap.dedent(f"""
        import sys, time
        import safetensors.torch as st
        import models.checkpoint as ck
        from models.tokenizer import Tokenizer
        from tests.conftest import tiny_model
        real = st.save_file
        def slow_save(tensors, path, metadata=None):
            real(tensors, path, metadata=metadata)
            with open(path, "r+b") as f:
                f.truncate(1000)  # as if the process died mid-write
            print("writing", flush=True)
            time.sleep(60)
        ck.save_file = slow_save
        ck.save_checkpoint(tiny_model("memsizer", seed=2), {str(tmp_path)!r}, Tokenizer())
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    _, _, config = load_checkpoint(tmp_path)  # verifies the sha256 of what is on disk
    assert config["weights"]["sha256"] == before


class Load(threading.Thread):
    """Sends valid questions until stopped; counts answers and failures."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.stop, self.ok, self.failed, self.refused = url, threading.Event(), 0, [], 0

    def run(self):
        while not self.stop.is_set():
            try:
                r = requests.post(self.url + "/answer", json={"question": Q, "model": "memsizer"}, timeout=60)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(r.status_code)
            except requests.ConnectionError:
                self.refused += 1  # a connection dropped by a dying worker: refused, not a wrong answer
            except requests.Timeout:
                self.failed.append("timeout")


def test_hup_reload_serves_retrained_weights_without_failed_requests(tiny_checkpoints, tmp_path):
    import shutil
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoints, checkpoints)
    process, url, _ = start_gunicorn(checkpoints, tmp_path)
    try:
        old = {m["name"]: m["checkpoint_sha256"] for m in requests.get(url + "/models", timeout=5).json()["models"]}
        load = Load(url)
        load.start()
        new = save_checkpoint(tiny_model("memsizer", seed=5), checkpoints / "memsizer", Tokenizer())["weights"]["sha256"]
        assert new != old["memsizer"]
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # new workers boot while the old ones finish their requests
            models = requests.get(url + "/models", timeout=60).json()["models"]
            rows = {m["name"]: m["checkpoint_sha256"] for m in models}
            if rows["memsizer"] == new:
                break
            time.sleep(0.3)
        time.sleep(1)
        load.stop.set()
        load.join(timeout=30)
        assert rows["memsizer"] == new and rows["transformer"] == old["transformer"]
        assert load.ok > 0 and load.failed == [] and load.refused == 0
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_killed_worker_is_replaced_and_requests_are_answered_or_refused(tiny_checkpoints, tmp_path):
    process, url, _ = start_gunicorn(tiny_checkpoints, tmp_path)
    try:
        workers = worker_pids(process.pid)
        assert len(workers) == 2
        load = Load(url)
        load.start()
        time.sleep(1)
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(3)
        load.stop.set()
        load.join(timeout=30)
        assert load.failed == [], "no request may fail with an error status"
        assert load.ok > 10
        deadline = time.monotonic() + 60  # the replacement may still be loading; the survivor answers
        while requests.get(url + "/readyz", timeout=30).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert requests.get(url + "/readyz", timeout=30).status_code == 200
        after = worker_pids(process.pid)
        assert len(after) == 2 and workers[0] not in after, "gunicorn replaced the killed worker"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_readyz_stays_ready_while_a_killed_worker_is_replaced(tiny_checkpoints, tmp_path):
    """Only one worker answered the /readyz that first said 200; a survivor that never answered
    one must still know the server had started, or the service reads as down until the
    replacement has loaded. Each worker is killed in turn, so one kill hits that worker."""
    process, url, _ = start_gunicorn(tiny_checkpoints, tmp_path)
    try:
        for _ in range(2):
            victim = worker_pids(process.pid)[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while victim in worker_pids(process.pid) or len(worker_pids(process.pid)) < 2:
                assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
                time.sleep(0.01)
            # reaped (its loaded mark gone) and replaced by a worker that is still loading
            answer = requests.get(url + "/readyz", timeout=30)
            assert answer.status_code == 200, answer.json()
            deadline = time.monotonic() + 60  # the replacement has loaded before the next kill
            while time.monotonic() < deadline:
                pids = worker_pids(process.pid)
                if len(pids) == 2 and victim not in pids and \
                        requests.get(url + "/readyz", timeout=30).json()["workers"]["loaded"] == 2:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the killed worker was not replaced")
    finally:
        process.terminate()
        process.wait(timeout=30)
