"""/docs and /redoc work offline: their HTML names no external host, every asset they load is served by the app,
their CSP names no other origin, and in a headless browser with every non-loopback request refused both pages
render the API with no CSP violation."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from chatbot_model.config import load_settings
from chatbot_model.server import create_app
from tests.helpers import FlakyBackend

PAGES = ("/docs", "/redoc")
# the one outside reference in redoc.standalone.js: a cosmetic logo the CSP blocks (img-src 'self' data:)
REDOCLY_LOGO = re.compile(r"image 'https://cdn\.redoc\.ly/redoc/logo-mini\.svg' violates .*img-src")
# what a CSP source may be on these pages: keywords, hashes, and the data:/blob: schemes; never a host
LOCAL_SOURCES = re.compile(r"^('self'|'none'|'unsafe-inline'|'sha256-[A-Za-z0-9+/=]+'|data:|blob:)$")


class _Refs(HTMLParser):
    """Every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


def refs(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs


def app_client() -> TestClient:
    settings = load_settings()
    return TestClient(create_app(settings, backend=FlakyBackend(settings, failures=0)))


@pytest.mark.parametrize("path", PAGES)
def test_docs_page_loads_only_assets_the_app_serves(path):
    with app_client() as client:
        page = client.get(path)
        assert page.status_code == 200
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page.text, re.IGNORECASE), \
            re.findall(r"https?://\S+", page.text)
        loaded = refs(page.text)
        assert any(r.endswith(".js") for r in loaded), loaded
        for ref in loaded:
            assert not urlsplit(ref).netloc and ref.startswith("/"), ref
            asset = client.get(ref)
            assert asset.status_code == 200 and asset.content, ref
        assert client.get("/docs-assets/../config.py").status_code == 404
        assert client.get("/docs-assets/core.py").status_code == 404


@pytest.mark.parametrize("path", PAGES)
def test_docs_page_csp_names_no_other_origin(path):
    with app_client() as client:
        csp = client.get(path).headers["content-security-policy"]
    directives = dict(d.strip().partition(" ")[::2] for d in csp.split(";") if d.strip())
    for name, sources in directives.items():
        for source in sources.split():
            assert LOCAL_SOURCES.match(source), f"{name}: {source}"
    assert directives["script-src"].startswith("'self'") and "unsafe-inline" not in directives["script-src"]


@pytest.mark.slow  # a headless browser
def test_docs_pages_render_offline_in_a_browser():
    """Swagger UI lists the /chat operation and ReDoc the API title, while every request to another host is
    refused and recorded; the browser reports no error and no CSP violation but one: ReDoc's side menu shows the
    Redocly logo from its CDN, which the CSP blocks before any request (the menu then shows the text alone)."""
    from playwright.sync_api import expect, sync_playwright

    from tests.helpers import CHROMIUM_ARGS as ARGS
    from tests.helpers import LiveServer
    from tests.helpers import chromium as _chromium

    settings = load_settings()
    server = LiveServer(create_app(settings, backend=FlakyBackend(settings, failures=0)))
    outside: list[str] = []
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=ARGS, headless=True)
            try:
                page = browser.new_page()
                page.on("console", lambda m: problems.append(m.text)
                        if ("Content Security Policy" in m.text or m.type == "error")
                        and not REDOCLY_LOGO.search(m.text) else None)

                def gate(route):
                    if urlsplit(route.request.url).hostname in ("127.0.0.1", None):
                        return route.continue_()
                    outside.append(route.request.url)
                    return route.abort()

                page.route("**/*", gate)
                page.goto(server.url + "/docs")
                expect(page.locator(".opblock-summary-path", has_text="/chat").first).to_be_visible(timeout=30_000)
                page.goto(server.url + "/redoc")
                expect(page.locator("h1", has_text="llmops-chatbot").first).to_be_visible(timeout=30_000)
            finally:
                browser.close()
    finally:
        server.close()
    assert not outside, outside
    assert not problems, problems
