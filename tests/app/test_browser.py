"""The page in real headless Chromium (Debian's, driven by Playwright) against real gunicorn."""
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import BACKENDS

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
Q = "What is the tens digit of 89290?"
# screenshots of the page as a user sees it, kept after the run (outside the checkout)
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(tempfile.gettempdir()) / "placevalue-test-artifacts"))
# the issue's three questions: an expected answer or none, and the warning's words
ISSUE_QUESTIONS = [("What is the billions digit of 98765432101?", "8", "training numbers have at most 10 digits"),
                   ("hello there", None, "Not a place-value question"),
                   ("What is the hundreds digit of 7?", "0", "its hundreds digit is 0")]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    expected = "Failed to load resource: the server responded with a status of 400"  # the validation test
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith(expected) else None)
    page.goto(live_server["url"] + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors or CSP violations: {errors}"


@pytest.mark.parametrize("model, cards", [("transformer", 1), ("memsizer", 1), ("all", len(BACKENDS))])
def test_answers_appear_without_reload(page, model, cards, tmp_path):
    page.evaluate("window.__marker = 1")  # survives only if the page is not reloaded
    page.fill("#question", Q)
    page.select_option("#model", model)
    page.click("#submit")
    expect(page.locator("#results .result")).to_have_count(cards)
    expect(page.locator("#results .latency")).to_have_count(cards)
    assert page.evaluate("window.__marker") == 1
    for latency in page.locator("#results .latency").all_text_contents():
        assert latency.endswith(" ms") and float(latency.split()[0]) > 0
    assert all(text.strip() for text in page.locator("#results .answer").all_text_contents())
    page.screenshot(path=str(tmp_path / f"answer-{model}.png"), full_page=True)


def test_empty_question_shows_inline_error(page, tmp_path):
    page.fill("#question", "")
    page.click("#submit")
    expect(page.locator("#question-error")).to_contain_text("empty")
    assert page.locator("#results .result").count() == 0
    page.screenshot(path=str(tmp_path / "error.png"))


def test_random_example_fills_the_field(page):
    page.click("#example")
    expect(page.locator("#question")).to_have_value(re.compile(r"^What is the [a-z ]+ digit of \d+\?$"))


def test_form_works_with_javascript_disabled(browser, live_server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server["url"] + "/")
    page.fill("#question", Q)
    page.select_option("#model", "all")
    page.click("#submit")
    expect(page.locator("#results .result")).to_have_count(len(BACKENDS))
    context.close()


def ask_and_check(page, question, expected, warning, shot: str):
    """Ask with every backend; the page must show the exact answer once, a mark per card and the warning."""
    page.fill("#question", question)
    page.select_option("#model", "all")
    page.click("#submit")
    expect(page.locator("#results .result")).to_have_count(len(BACKENDS))
    expect(page.locator("#ood-warning")).to_contain_text(warning)
    if expected is None:
        expect(page.locator("#expected")).to_have_count(0)
        assert page.locator("#results .mark").count() == 0
    else:
        expect(page.locator("#expected")).to_have_text(expected)
        answers = [a.split()[0] for a in page.locator("#results .answer").all_text_contents()]
        marks = page.locator("#results .mark").all_text_contents()
        assert marks == ["✓" if a == expected else "✗" for a in answers]
        expect(page.locator("#agreement")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)


@pytest.mark.parametrize("question, expected, warning", ISSUE_QUESTIONS)
def test_issue_questions_show_check_and_warning_with_javascript(page, question, expected, warning):
    page.evaluate("window.__marker = 1")
    ask_and_check(page, question, expected, warning, f"js-{ISSUE_QUESTIONS.index((question, expected, warning))}.png")
    assert page.evaluate("window.__marker") == 1  # answered in place


@pytest.mark.parametrize("question, expected, warning", ISSUE_QUESTIONS)
def test_issue_questions_show_check_and_warning_without_javascript(browser, live_server, question, expected, warning):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server["url"] + "/")
    ask_and_check(page, question, expected, warning, f"nojs-{ISSUE_QUESTIONS.index((question, expected, warning))}.png")
    context.close()


def test_reliability_charts_render(page):
    expect(page.locator("#reliability svg[role=img]")).to_have_count(3)
    box = page.locator("#reliability svg[role=img]").first.bounding_box()
    assert box["width"] > 300 and box["height"] > 80


def check_strips(page):
    """One strip per compared backend, lined up: one shaded cell per question character."""
    expect(page.locator("#why tr")).to_have_count(len(BACKENDS))
    for row in page.locator("#why tr").all():
        cells = row.locator(".strip span")
        assert cells.count() == len(Q)
        assert "".join(cells.all_text_contents()) == Q
        assert all(re.fullmatch(r"a0|[pn][1-5]", c.get_attribute("class")) for c in cells.all())
        assert all(c.get_attribute("title") for c in cells.all())  # the value on hover
    assert page.locator("#why .strip span[class^='p']").count() > 0, "something raised the answers"
    assert page.locator("#why .p4, #why .n4").count() >= 2, "the legend's swatches"


@pytest.mark.parametrize("javascript", [True, False], ids=["with-js", "without-js"])
def test_why_shows_a_strip_per_compared_backend(browser, live_server, javascript, tmp_path):
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(live_server["url"] + "/")
    page.fill("#question", Q)
    page.select_option("#model", "all")
    page.click("#submit")
    expect(page.locator("#results .result")).to_have_count(len(BACKENDS))
    page.locator("#results .result button.explain").first.click()
    check_strips(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"why-{'js' if javascript else 'nojs'}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors or CSP violations: {errors}"
