"""Fixtures of the server tests."""

from __future__ import annotations

import pytest

from tests.fake_llm_server import FakeLLMServer
from tests.helpers import chat_page_app_server, serving


@pytest.fixture(scope="module")
def upstream():
    """The fake OpenAI and Anthropic HTTP server on 127.0.0.1, shared by one module's tests."""
    server = FakeLLMServer()
    yield server
    server.close()


@pytest.fixture
def fake(upstream):
    """`upstream` with no queued replies, recorded requests or counted streams, before and after the test."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="module")
def live(service):
    """The module's `service` served over HTTP on 127.0.0.1 (its `serving`)."""
    with serving(service) as server:
        yield server


@pytest.fixture
def chat_page_server(shipped_index, tmp_path):
    """The chat page served (service backend) on a ready LiveServer, and its settings (the tracking store is the
    test's own, `isolated`'s)."""
    server, settings = chat_page_app_server(shipped_index, tmp_path)
    yield server, settings
    server.close()
