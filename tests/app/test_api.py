"""The JSON API through Flask's test client (tiny checkpoints)."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BACKENDS, SHIPPED

Q = "What is the tens digit of 89290?"


@pytest.mark.parametrize("body, code", [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00", "invalid_json"),
    (b"", "invalid_json"),
    (b"[" * 4000, "invalid_json"),  # deeper than the parser's recursion limit
    (b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body_too_large"),
    (b'{"question": 1e99999}', "invalid_type"),
    (b'{"question": NaN}', "invalid_type"),
    (b'{"question": "\\ud800"}', "invalid_character"),  # a lone surrogate
    (b"[1, 2]", "invalid_request"),
    (b'"just a string"', "invalid_request"),
    (b"{}", "invalid_request"),
    (b'{"question": "%s", "questions": ["%s"]}' % (Q.encode(), Q.encode()), "invalid_request"),
    (b'{"question": 42}', "invalid_type"),
    (b'{"question": null}', "invalid_type"),
    (b'{"question": ["a"]}', "invalid_type"),
    (b'{"question": ""}', "empty_question"),
    (b'{"question": "   "}', "empty_question"),
    (b'{"question": "' + b"9" * 161 + b'"}', "question_too_long"),
    ('{"question": "What is the tens digit of 5\u20ac?"}'.encode(), "invalid_character"),
    (b'{"question": "tab\\there"}', "invalid_character"),
    (b'{"question": "What is the tens digit of 12?", "model": "gpt"}', "unknown_model"),
    (b'{"question": "What is the tens digit of 12?", "model": 3}', "unknown_model"),
    (b'{"question": "What is the tens digit of 12?", "backend": "transformer"}', "unknown_field"),
    (b'{"questions": ["What is the tens digit of 12?"], "Model": "memsizer"}', "unknown_field"),
    (b'{"questions": []}', "invalid_request"),
    (b'{"questions": "What"}', "invalid_request"),
    (b'{"questions": ["What is the tens digit of 12?", 5]}', "invalid_type"),
    (b'{"questions": ["What is the tens digit of 12?", ""]}', "empty_question"),
    (b'{"questions": ["q"] }'.replace(b'["q"]', b"[" + b",".join([b'"What is the tens digit of 12?"'] * 9) + b"]"),
     "too_many_questions"),
])
def test_bad_requests_get_400_and_the_error_shape(client, body, code):
    response = client.post("/answer", data=body, content_type="application/json")
    assert response.status_code == (413 if code == "body_too_large" else 400)
    error = response.json["error"]
    assert error["code"] == code and error["message"] and error["request_id"]


@pytest.mark.parametrize("body", [b'{"question": ' + b"9" * 5000 + b"}",  # beyond Python's int-parsing limit
                                  b"[" * 60_000, b'{"question": "' + b"\\u0041" * 10_000 + b'"}'])
def test_pathological_bodies_under_the_size_limit_get_400(client, app, body):
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    response = client.post("/answer", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"]["code"] in ("invalid_json", "question_too_long")


def test_messages_say_what_is_wrong(client):
    bad_char = client.post("/answer", json={"question": "What is the tens digit of 5\u20ac?"}).json["error"]["message"]
    assert "'\u20ac'" in bad_char and "position 27" in bad_char
    unknown = client.post("/answer", json={"question": Q, "model": "gpt"}).json["error"]["message"]
    assert all(name in unknown for name in BACKENDS)
    batch = client.post("/answer", json={"questions": [Q, ""]}).json["error"]["message"]
    assert batch.startswith("questions[1]")
    misspelt = client.post("/answer", json={"question": Q, "backend": "transformer"}).json["error"]["message"]
    assert "'backend'" in misspelt and "'model'" in misspelt


@pytest.mark.parametrize("model", BACKENDS)
def test_single_answer_is_checked(client, model):
    response = client.post("/answer", json={"question": Q, "model": model})
    assert response.status_code == 200
    body = response.json
    assert body["model"] == model and isinstance(body["answer"], str) and body["latency_ms"] > 0
    assert len(body["answer"]) <= 30
    assert body["check"] == {"expected": "9", "correct": body["answer"] == "9", "in_distribution": True, "reasons": []}


@pytest.mark.parametrize("question, expected, codes", [
    ("What is the billions digit of 98765432101?", "8", ["number_too_long", "place_rare"]),
    ("hello there", None, ["not_task_form"]),
    ("What is the hundreds digit of 7?", "0", ["place_beyond_number"]),
])
def test_the_issue_questions_are_flagged(client, question, expected, codes):
    check = client.post("/answer", json={"question": question}).json["check"]
    assert check["expected"] == expected and [r["code"] for r in check["reasons"]] == codes
    assert check["in_distribution"] is False and all(r["message"] for r in check["reasons"])
    assert check["correct"] is (None if expected is None else check["correct"])


def test_batch_checks_each_question(client):
    questions = ["What is the units digit of 7?", "what is the units digit of 7?", "seven"]
    body = client.post("/answer", json={"questions": questions}).json
    assert [c["expected"] for c in body["checks"]] == ["7", "7", None]
    # lower case is answered in the trained wording; what is not the task's form stays as typed
    assert body["questions"] == ["What is the units digit of 7?", "What is the units digit of 7?", "seven"]
    assert [c["in_distribution"] for c in body["checks"]] == [True, True, False]
    assert [c["correct"] for c in body["checks"]][:2] == [a == "7" for a in body["answers"][:2]]


@pytest.mark.parametrize("typed", ["what is the tens digit of 89,290?", "  What  is the TENS digit of 89290 ? ",
                                   "WHAT IS THE TENS DIGIT OF 89,290?"])
def test_wording_variants_are_answered_in_the_trained_form(client, typed):
    body = client.post("/answer", json={"question": typed, "model": "transformer"}).json
    direct = client.post("/answer", json={"question": "What is the tens digit of 89290?", "model": "transformer"}).json
    assert body["question"] == "What is the tens digit of 89290?" and body["submitted"] == typed
    assert body["answer"] == direct["answer"] and body["check"] == direct["check"]
    assert body["check"]["expected"] == "9" and body["check"]["in_distribution"] is True


def test_default_model_applies(client, app):
    assert client.post("/answer", json={"question": Q}).json["model"] == app.config["DEFAULT_MODEL"]


def test_batch_answers_match_single_answers(client):
    questions = [Q, "What is the units digit of 7?", "What is the hundred thousands digit of 41853604?"]
    batch = client.post("/answer", json={"questions": questions, "model": "memsizer"})
    assert batch.status_code == 200 and batch.json["count"] == 3
    singles = [client.post("/answer", json={"question": q, "model": "memsizer"}).json["answer"] for q in questions]
    assert batch.json["answers"] == singles


def test_models_endpoint_fields(client):
    rows = {row["name"]: row for row in client.get("/models").json["models"]}
    assert tuple(rows) == BACKENDS
    for name, row in rows.items():
        assert row["ready"] is True and row["parameters"] > 0 and len(row["checkpoint_sha256"]) == 64
        assert row["architecture"]["d_model"] == 32 and row["training_steps"] == 7
        assert row["architecture"]["backend"] == name and row["display_name"] and row["paper"]
        assert row["architecture"]["positions"] == {"source": "start", "digits": "abacus", "relative": "none"}
        assert row["interpolate_accuracy"] == 0.5
        reliability = row["reliability"]
        assert set(reliability) == {"interpolate", "train", "extrapolate"}
        assert reliability["train"]["per_place"] == {"units": 0.75, "billions": 0.25}
        assert reliability["extrapolate"]["per_place_total"] == {"hundreds": 2, "ten billions": 2}
    assert rows["memsizer"]["architecture"]["settings"] == {"k": 8, "causal_k": 4, "encoder": "memsizer", "causal_gate": "none"}
    assert "encoder: MemSizer attention" in rows["memsizer"]["configuration"]
    assert "0 expanding bits" in rows["memoryformer"]["configuration"]
    assert rows["memsizer"]["parameters"] < rows["transformer"]["parameters"]


def test_health_ready_example(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["ready"] is True
    assert client.get("/example").json["question"].startswith("What is the ")
    assert ready.json["required"] == list(SHIPPED)


def test_404_405_413_use_the_error_shape(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.get("/answer")
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]
    big = client.post("/answer", data=b'{"question": "' + b"1" * 5000 + b'"}', content_type="application/json")
    assert big.status_code == 413 and big.json["error"]["code"] == "body_too_large"


def test_metrics_count_answers_and_errors(client):
    client.post("/answer", json={"question": Q, "model": "transformer"})
    client.post("/answer", json={"question": "", "model": "transformer"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'placevalue_questions_answered_total{model="transformer"}' in text
    assert 'placevalue_errors_total{code="empty_question"}' in text
    assert 'placevalue_request_seconds_bucket{endpoint="api.answer",le="0.002",model="transformer",status="200"}' in text


def pass_totals(client, model):
    """(passes, wall seconds, dispatcher CPU seconds) of `model`'s passes, from /metrics."""
    text = client.get("/metrics").get_data(as_text=True)
    samples = {(s.name, s.labels.get("model")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return (samples.get(("placevalue_pass_seconds_count", model), 0.0),
            samples.get(("placevalue_pass_seconds_sum", model), 0.0),
            samples.get(("placevalue_pass_cpu_seconds_total", model), 0.0))


def test_metrics_time_every_pass(client):
    passes, seconds, cpu = pass_totals(client, "memsizer")
    for _ in range(3):
        assert client.post("/answer", json={"question": Q, "model": "memsizer"}).status_code == 200
    passes_after, seconds_after, cpu_after = pass_totals(client, "memsizer")
    assert passes_after == passes + 3 and seconds_after > seconds
    # a thread computes no longer than the wall time it ran (plus the clock's tick)
    assert 0 < cpu_after - cpu <= seconds_after - seconds + 0.02


def test_request_id_and_security_headers(client):
    response = client.post("/answer", json={"question": ""}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123" and response.json["error"]["request_id"] == "abc-123"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Referrer-Policy"]
    forged = client.get("/healthz", headers={"X-Request-ID": "<script>"})
    assert forged.headers["X-Request-ID"] != "<script>"


def test_rare_place_reason_follows_each_checkpoints_recorded_training_mix(tiny_checkpoints, tmp_path):
    """A model trained with half its batches place-balanced saw `billions` in ~5% of questions:
    not rare for it, while it stays rare (0.9%) for one trained on DeepMind's sampler alone."""
    import json
    import shutil

    from app import create_app
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoints, root)
    config_path = root / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["provenance"]["recipe"] = {"balanced_share": 0.5}
    config_path.write_text(json.dumps(config))
    client = create_app({"TESTING": True, "CHECKPOINT_DIR": str(root)}).test_client()
    question = "What is the billions digit of 4123456789?"
    codes = {model: [r["code"] for r in client.post("/answer", json={"question": question, "model": model})
                     .json["check"]["reasons"]] for model in ("transformer", "memsizer")}
    assert codes == {"transformer": [], "memsizer": ["place_rare"]}
    shares = {m["name"]: m.get("training_balanced_share") for m in client.get("/models").json["models"]}
    assert shares["transformer"] == 0.5 and shares["memsizer"] == 0.0
    # the page: the shared warning box holds no reason; the MemSizer result names its own
    page = client.post("/", data={"question": question, "model": "all"}).get_data(as_text=True)
    assert 'id="ood-warning"' not in page
    assert page.count('data-code="place_rare"') == sum(1 for m in BACKENDS if m != "transformer")
