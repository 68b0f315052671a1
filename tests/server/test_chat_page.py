"""The chat page in a real headless browser (Debian chromium driven by Playwright) against uvicorn on loopback:
type a question, see the answer with sources, click thumbs down, see it acknowledged and recorded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.slow  # a headless browser against uvicorn

Q = "How do I promote a registered MLflow model version to Production?"


def test_ask_see_sources_and_rate_down(chat_page_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from chatbot_model.store.feedback import FeedbackStore

    server, settings = chat_page_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.goto(server.url + "/")
            expect(page.get_by_test_id("status")).to_contain_text("ready", timeout=30_000)
            page.get_by_label("Question").fill(Q)
            page.get_by_role("button", name="Send").click()
            answer = page.get_by_test_id("answer").first
            expect(answer).to_be_visible(timeout=30_000)
            expect(answer.get_by_test_id("sources").locator("li").first).to_be_visible()
            expect(answer.get_by_test_id("meta")).to_contain_text("route")
            expect(answer.get_by_test_id("meta")).to_contain_text("extractive-v1")
            answer.get_by_test_id("thumbs-down").click()
            expect(answer.get_by_test_id("ack")).to_contain_text("Thanks", timeout=15_000)
            expect(answer.get_by_test_id("thumbs-up")).to_be_disabled()
            shot = Path(os.environ.get("LLMOPS_SCREENSHOT_DIR", tmp_path)) / "chat_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    rows = FeedbackStore(settings.feedback_db_url).ratings()
    assert [(r.rating, r.provider) for r in rows] == [("down", "local")]


def test_a_reload_redraws_the_conversation_and_new_conversation_forgets_it(chat_page_server):
    """After a reload the page shows the stored question and answer again, with its sources, route and rating
    buttons (the rating still works); after "New conversation" a reload shows nothing; an id the server refuses
    is forgotten."""
    from playwright.sync_api import expect, sync_playwright

    server, _ = chat_page_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            expect(page.get_by_test_id("status")).to_contain_text("ready", timeout=30_000)
            page.get_by_label("Question").fill(Q)
            page.get_by_role("button", name="Send").click()
            expect(page.get_by_test_id("answer").first.get_by_test_id("meta")).to_be_visible(timeout=30_000)
            answered = page.get_by_test_id("answer-text").first.text_content()

            page.reload()
            expect(page.get_by_test_id("question")).to_have_text([Q], timeout=30_000)
            answer = page.get_by_test_id("answer")
            expect(answer).to_have_count(1)
            expect(answer.get_by_test_id("answer-text")).to_have_text(answered)
            expect(answer.get_by_test_id("sources").locator("li").first).to_be_visible()
            expect(answer.get_by_test_id("meta")).to_contain_text("extractive-v1")
            answer.get_by_test_id("thumbs-up").click()
            expect(answer.get_by_test_id("ack")).to_contain_text("Thanks", timeout=15_000)

            page.get_by_test_id("new").click()
            assert page.evaluate("sessionStorage.getItem('chatbot-session')") is None
            page.reload()
            expect(page.get_by_test_id("status")).to_contain_text("ready", timeout=30_000)
            expect(page.get_by_test_id("question")).to_have_count(0)
            expect(page.get_by_test_id("answer")).to_have_count(0)

            page.evaluate("sessionStorage.setItem('chatbot-session', 'demo')")
            page.reload()
            # restore() disables Send until the server has answered; wait_for_function would need 'unsafe-eval',
            # which the page's Content-Security-Policy refuses (newer chromium enforces it on Playwright too)
            expect(page.get_by_role("button", name="Send")).to_be_enabled(timeout=30_000)
            assert page.evaluate("sessionStorage.getItem('chatbot-session')") is None
            expect(page.get_by_test_id("error")).to_have_count(0)
        finally:
            browser.close()
