"""The server-rendered form (the no-JavaScript path): answers, the exact-answer check, warnings, charts."""
import re

import pytest

from tests.conftest import BACKENDS

Q = "What is the tens digit of 89290?"


def cards(page: str) -> dict:
    """{model: (answer, verdict)} of the result cards on a rendered page."""
    found = re.findall(r'<div class="result[^"]*" data-model="(\w+)">.*?<p class="answer">([^<]*).*?'
                       r'<p class="verdict">([^<]*)</p>', page, re.S)
    return {model: (answer.strip(), verdict) for model, answer, verdict in found}


def test_form_page_lists_choices_and_models(client):
    page = client.get("/").get_data(as_text=True)
    for name in BACKENDS:
        assert f'<option value="{name}"' in page and f'<tr data-model="{name}">' in page
    assert '<option value="all"' in page and ("Compare both" if len(BACKENDS) == 2 else "Compare all") in page
    assert 'name="question"' in page and 'action="/"' in page and "Random example" in page
    assert "Parameters" in page and "50.00%" in page  # the models panel from the service description


@pytest.mark.parametrize("model, shown", [*((name, [name]) for name in BACKENDS), ("all", list(BACKENDS))])
def test_post_renders_checked_answers_and_latency(client, model, shown):
    page = client.post("/", data={"question": Q, "model": model, "action": "answer"}).get_data(as_text=True)
    assert list(cards(page)) == shown
    assert page.count(" ms</p>") == len(shown)
    assert '<strong id="expected">9</strong>' in page and page.count('id="expected"') == 1
    for answer, verdict in cards(page).values():
        assert verdict == ("right" if answer == "9" else "wrong")
    assert 'id="ood-warning"' not in page
    assert ('id="agreement"' in page) == (len(shown) > 1)


@pytest.mark.parametrize("question, expected, warning", [
    ("What is the billions digit of 98765432101?", "8", "training numbers have at most 10"),
    ("hello there", None, "Not a place-value question"),
    ("What is the hundreds digit of 7?", "0", "its hundreds digit is 0"),
])
def test_out_of_distribution_questions_warn_in_words(client, question, expected, warning):
    page = client.post("/", data={"question": question, "model": "all"}).get_data(as_text=True)
    assert 'id="ood-warning"' in page and warning in page
    assert (f'<strong id="expected">{expected}</strong>' in page) == (expected is not None)
    verdicts = {verdict for _, verdict in cards(page).values()}
    assert verdicts == {"no exact answer to compare"} if expected is None else verdicts <= {"right", "wrong"}


def test_reliability_charts_are_inline_svg_per_split(client):
    page = client.get("/").get_data(as_text=True)
    section = page[page.index('<section id="reliability">'):]
    assert section.count("<svg viewBox") == 3 and "<script" not in section
    for place in ("units", "billions", "ten billions"):
        assert f">{place}</text>" in section
    # one bar per backend and recorded place: 2 places per split in the fixture
    assert section.count("<rect x=") == 3 * 2 * len(BACKENDS)
    assert "Transformer, billions: 25.0%" in section


@pytest.mark.parametrize("question, message", [("", "Question is empty"), ("x" * 161, "the limit is 160"),
                                               ("5\u20ac?", "U+20AC")])
def test_invalid_question_shows_inline_error(client, question, message):
    response = client.post("/", data={"question": question, "model": "memsizer"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and 'id="question-error"' in page and message in page
    assert 'aria-invalid="true"' in page and 'class="result' not in page


def test_unknown_choice_is_a_form_error(client):
    response = client.post("/", data={"question": Q, "model": "both-and-more"})
    assert response.status_code == 400 and "Choose a backend" in response.get_data(as_text=True)


def test_example_button_fills_a_question(client):
    page = client.post("/", data={"question": "", "model": "memsizer", "action": "example"}).get_data(as_text=True)
    assert 'value="What is the ' in page and 'class="result' not in page


def test_question_is_escaped(client):
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    page = client.post("/", data={"question": evil, "model": "all"}).get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page or "&#34;&gt;&lt;img" in page


def test_html_404_for_browsers(client):
    response = client.get("/missing", headers={"Accept": "text/html"})
    assert response.status_code == 404 and b"Back to the question form" in response.data
