"""The chat page renders a streamed answer as it arrives (headless chromium, uvicorn on loopback, the page's CSP
in force): the answer's text grows once per delta event before the sources and the rating appear."""

from __future__ import annotations

import pytest

from tests.helpers import CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.slow  # a headless browser against uvicorn

Q = "How do I promote a registered MLflow model version to Production?"

COUNT_GROWTH = """() => {
  // each `textContent` assignment adds a new text node holding the text of that moment
  window.__growth = [];
  new MutationObserver((records) => {
    for (const r of records) {
      if (!(r.target.closest && r.target.closest('[data-testid="answer-text"]'))) continue;
      for (const node of r.addedNodes) if (node.nodeType === Node.TEXT_NODE) window.__growth.push(node.data.length);
    }
  }).observe(document.getElementById("conversation"), {childList: true, subtree: true});
}"""


def test_the_page_shows_the_answer_growing_piece_by_piece(chat_page_server):
    from playwright.sync_api import expect, sync_playwright

    server, _ = chat_page_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            violations = []
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            page.goto(server.url + "/")
            expect(page.get_by_test_id("status")).to_contain_text("ready", timeout=30_000)
            page.evaluate(COUNT_GROWTH)
            page.get_by_label("Question").fill(Q)
            page.get_by_role("button", name="Send").click()
            answer = page.get_by_test_id("answer").first
            expect(answer.get_by_test_id("meta")).to_contain_text("extractive-v1", timeout=30_000)
            expect(answer.get_by_test_id("sources").locator("li").first).to_be_visible()
            growth = page.evaluate("window.__growth")
            text = answer.get_by_test_id("answer-text").text_content()
        finally:
            browser.close()
    lengths = sorted(set(growth))
    assert len(lengths) >= 2, f"the answer arrived in one piece: {growth}"  # one step per sentence
    assert lengths[-1] == len(text) and lengths[0] < len(text)
    assert violations == []
