"""The server-rendered form (the no-JavaScript path)."""
import pytest

Q = "What is the tens digit of 89290?"


def test_form_page_lists_choices_and_models(client):
    page = client.get("/").get_data(as_text=True)
    for value, label in [("transformer", "Transformer"), ("memsizer", "MemSizer"), ("both", "Compare both")]:
        assert f'value="{value}"' in page and label in page
    assert 'name="question"' in page and 'action="/"' in page and "Random example" in page
    assert "Parameters" in page and "50.00%" in page  # the models panel from the service description


@pytest.mark.parametrize("model, shown", [("transformer", ["transformer"]), ("memsizer", ["memsizer"]),
                                          ("both", ["transformer", "memsizer"])])
def test_post_renders_answers_and_latency(client, model, shown):
    page = client.post("/", data={"question": Q, "model": model, "action": "answer"}).get_data(as_text=True)
    assert page.count('class="result"') == len(shown)
    for name in shown:
        assert f'data-model="{name}"' in page
    assert page.count(" ms</p>") == len(shown)


@pytest.mark.parametrize("question, message", [("", "Question is empty"), ("x" * 161, "the limit is 160"),
                                               ("5\u20ac?", "U+20AC")])
def test_invalid_question_shows_inline_error(client, question, message):
    response = client.post("/", data={"question": question, "model": "memsizer"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and 'id="question-error"' in page and message in page
    assert 'aria-invalid="true"' in page and 'class="result"' not in page


def test_example_button_fills_a_question(client):
    page = client.post("/", data={"question": "", "model": "memsizer", "action": "example"}).get_data(as_text=True)
    assert 'value="What is the ' in page and 'class="result"' not in page


def test_question_is_escaped(client):
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    page = client.post("/", data={"question": evil, "model": "both"}).get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page or "&#34;&gt;&lt;img" in page


def test_html_404_for_browsers(client):
    response = client.get("/missing", headers={"Accept": "text/html"})
    assert response.status_code == 404 and b"Back to the question form" in response.data
