"""Mixed valid/invalid requests against real gunicorn from 16 client threads: no unexpected
errors, every valid answer identical to the in-process answer, worker memory stable."""
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from benchmarks.http_load import worker_rss_mib
from models.checkpoint import load_checkpoint
from models.task import generate
from training.evaluate import predict

pytestmark = pytest.mark.slow
# the suite sends 2,000; PLACEVALUE_LOAD_REQUESTS=10000 gives the full figure
TOTAL, CLIENTS = int(os.environ.get("PLACEVALUE_LOAD_REQUESTS", "2000")), 16
INVALID = [({"question": ""}, "empty_question"), ({"question": "x" * 161}, "question_too_long"),
           ({"question": "5\u20ac?"}, "invalid_character"), ({"question": "What?", "model": "gpt"}, "unknown_model"),
           ({"questions": []}, "invalid_request"), ({"question": 7}, "invalid_type")]


def test_ten_thousand_mixed_requests(live_server, tiny_checkpoints):
    questions = [q for q, _ in generate("interpolate", 200, seed=77)]
    expected = {}
    for model in ("transformer", "memsizer"):
        net, tokenizer, _ = load_checkpoint(Path(tiny_checkpoints) / model)
        expected[model] = dict(zip(questions, predict(net, tokenizer, questions)))
    rng = random.Random(0)
    plan = []
    for _ in range(TOTAL):
        if rng.random() < 0.25:
            plan.append(("invalid",) + rng.choice(INVALID))
        else:
            plan.append(("valid", {"question": rng.choice(questions), "model": rng.choice(["transformer", "memsizer"])}, None))
    url = live_server["url"] + "/answer"
    local = threading.local()
    rss_before = worker_rss_mib(live_server["process"].pid)

    def send(item):
        kind, body, code = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
        r = local.session.post(url, json=body, timeout=60)
        if kind == "valid":
            return r.status_code == 200 and r.json()["answer"] == expected[body["model"]][body["question"]]
        return r.status_code == 400 and r.json()["error"]["code"] == code

    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(send, plan))
    rss_after = worker_rss_mib(live_server["process"].pid)
    assert outcomes.count(False) == 0, f"{outcomes.count(False)} of {TOTAL} requests went wrong"
    assert sorted(rss_before) == sorted(rss_after), "no worker died"
    for pid, before in rss_before.items():
        assert rss_after[pid] < before * 1.25 + 20, f"worker {pid} RSS grew from {before:.0f} to {rss_after[pid]:.0f} MiB"
    print(f"worker RSS MiB before {rss_before}, after {rss_after}")
