"""The page in real headless Chromium (Debian's, driven by Playwright) against real gunicorn."""
import re
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
Q = "What is the tens digit of 89290?"


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


@pytest.mark.parametrize("model, cards", [("transformer", 1), ("memsizer", 1), ("both", 2)])
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
    page.select_option("#model", "both")
    page.click("#submit")
    expect(page.locator("#results .result")).to_have_count(2)
    context.close()
