"""Property-based fuzzing of POST /answer and the form: never a 5xx, always the documented shape."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BACKENDS

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)
nasty_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300) | st.sampled_from([
    "\u202eWhat is the tens digit of 12?", "What\u200b is the tens digit of 12?", "\x00", "What is the tens digit of 12?\x00",
    "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "9" * 5000, " " * 161, "What is the tens digit of 12?"])
bodies = st.one_of(
    st.builds(lambda q, m: {"question": q, "model": m}, nasty_text | json_values, st.sampled_from(BACKENDS) | json_values),
    st.builds(lambda qs: {"questions": qs}, st.lists(nasty_text, max_size=12) | json_values),
    json_values)
# bodies that break naive parsers: deep nesting (RecursionError in json), huge integers (beyond
# Python's int-parsing digit limit), huge exponents, lone surrogates, odd encodings, duplicate keys
hostile_bodies = st.one_of(
    st.builds(lambda n, opener: opener * n, st.integers(1, 4000), st.sampled_from([b"[", b"{\"a\":", b'{"question":['])),
    st.builds(lambda n, closer: b"[" * n + closer * n, st.integers(900, 2000), st.sampled_from([b"]", b"}"])),
    st.builds(lambda n: b'{"question": ' + b"9" * n + b"}", st.integers(1, 4050)),
    st.builds(lambda e: b'{"question": 1e' + str(e).encode() + b"}", st.integers(-10**6, 10**6)),
    st.sampled_from([b'{"question": "\\ud800"}', b'{"question": "\\udfff\\ud800"}', b"\xef\xbb\xbf{}",
                     '{"question": "x"}'.encode("utf-16"), '{"question": "x"}'.encode("utf-32"),
                     b'{"question": NaN}', b'{"question": Infinity}', b'{"question": -Infinity}',
                     b'{"model": "memsizer", "model": [], "question": "What is the tens digit of 1?"}']),
    st.builds(lambda prefix, junk: prefix + junk, st.sampled_from([b"[" * 2000, b'{"question": "', b"{"]),
              st.binary(max_size=200)))
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_api_response(response):
    assert response.status_code < 500, response.get_data(as_text=True)
    body = response.get_json()
    if response.status_code == 200:
        assert ("answer" in body and "check" in body) or ("answers" in body and "checks" in body)
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}


@SETTINGS
@given(body=bodies)
def test_fuzz_json_bodies(client, body):
    check_api_response(client.post("/answer", data=json.dumps(body), content_type="application/json"))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400), content_type=st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]))
def test_fuzz_raw_bytes_and_content_types(client, raw, content_type):
    check_api_response(client.post("/answer", data=raw, content_type=content_type))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=hostile_bodies, content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_fuzz_parser_hostile_bodies(client, raw, content_type):
    check_api_response(client.post("/answer", data=raw, content_type=content_type))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(st.sampled_from(["X-Request-ID", "Accept", "Content-Length", "Content-Type",
                                                "Transfer-Encoding", "Accept-Encoding", "Content-Encoding"]),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
                               max_size=4))
def test_fuzz_headers(client, headers):
    """Odd headers on the API and the form: a clear 4xx at worst, never a 5xx."""
    response = client.post("/answer", data=b'{"question": "What is the tens digit of 12?"}', headers=headers)
    assert response.status_code < 500
    assert client.get("/", headers=headers).status_code < 500


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=nasty_text, model=st.text(max_size=20) | st.sampled_from([*BACKENDS, "all"]))
def test_fuzz_form(client, question, model):
    response = client.post("/", data={"question": question, "model": model})
    assert response.status_code in (200, 400, 413)  # 413: body over the limit, shown inline too
    page = response.get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page
    if response.status_code != 200:
        assert 'id="question-error" class="error" role="alert">' in page


def test_service_still_answers_after_fuzzing(client):
    """Run last in this module: bad input changed nothing."""
    response = client.post("/answer", json={"questions": ["What is the tens digit of 89290?"] * 2})
    assert response.status_code == 200 and response.json["answers"][0] == response.json["answers"][1]


def test_duplicate_keys_take_the_last_value(client):
    body = b'{"question": "", "question": "What is the tens digit of 12?"}'
    assert client.post("/answer", data=body, content_type="application/json").status_code == 200
