"""POST /explain: the answer, its check and per-character attributions; validated like /answer, and
bounded apart from it so that explanations cannot starve the answers."""
import math

import pytest

from models import registry
from tests.app.test_openapi import check_against
from tests.conftest import BACKENDS

Q = "What is the tens digit of 89290?"


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").json


@pytest.mark.parametrize("model", BACKENDS)
def test_explanation_shape_and_schema(client, spec, model):
    response = client.post("/explain", json={"question": Q, "model": model})
    assert response.status_code == 200, response.json
    body = response.json
    check_against(spec, "/explain", "post", 200, body)
    answered = client.post("/answer", json={"question": Q, "model": model}).json
    assert body["answer"] == answered["answer"] and body["check"] == answered["check"]
    attribution = body["attribution"]
    assert attribution["characters"] == list(Q) and len(attribution["scores"]) == len(Q)
    # the method follows what the backend's description says gradients can see
    differentiable = registry.get(model).differentiable
    assert attribution["method"] == ("integrated_gradients" if differentiable else "shapley_value_sampling")
    assert attribution["computed_on"] == "torch float32" and attribution["served_by"] == "torch"
    # the reported gap is the scores' own: their sum against the change they explain
    gap = abs(sum(attribution["scores"]) - attribution["explained_change"]) / abs(attribution["explained_change"])
    assert attribution["completeness_gap"] == pytest.approx(gap, abs=1e-6)


@pytest.mark.parametrize("body", [b"{oops", b"[1]", b'{"question": ""}', b'{"question": 7}', b'{"question": "\\u00e9?"}',
                                  b'{"question": "' + b"1" * 200 + b'"}', b'{"question": "What?", "model": "gpt"}',
                                  b'{"question": "What?", "backend": "memsizer"}', b'{"model": "memsizer"}'])
def test_bad_input_is_answered_as_answer_answers_it(client, body):
    explained = client.post("/explain", data=body, content_type="application/json")
    answered = client.post("/answer", data=body, content_type="application/json")
    assert explained.status_code == answered.status_code == 400
    assert explained.json["error"]["code"] == answered.json["error"]["code"]


def test_a_batch_is_refused_by_name(client):
    response = client.post("/explain", json={"questions": [Q]})
    assert response.status_code == 400 and response.json["error"]["code"] == "unknown_field"
    assert "'questions'" in response.json["error"]["message"]


def test_a_full_explanation_bound_answers_503_while_answers_go_on(app, client, spec):
    slots = app.extensions["qa_service"]._explain_slots
    assert slots.acquire(blocking=False), "the default bound is one explanation at a time"
    try:
        busy = client.post("/explain", json={"question": Q, "model": BACKENDS[0]})
        assert busy.status_code == 503 and busy.json["error"]["code"] == "overloaded"
        # a slot frees in about one explanation's time: Retry-After follows the measured time
        measured = app.extensions["qa_service"]._explain_seconds
        assert int(busy.headers["Retry-After"]) == max(1, math.ceil(measured))
        check_against(spec, "/explain", "post", 503, busy.json)
        assert client.post("/answer", json={"question": Q, "model": BACKENDS[0]}).status_code == 200
    finally:
        slots.release()
    assert client.post("/explain", json={"question": Q, "model": BACKENDS[0]}).status_code == 200
