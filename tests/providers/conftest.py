"""Fixtures of the provider tests: the fake OpenAI/Anthropic server and an environment without the SDKs' own
settings."""

from __future__ import annotations

import pytest

from tests.fake_llm_server import fake_llm_server as _fake_llm_server

server = pytest.fixture(_fake_llm_server)

ENV_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN",
            "OPENAI_CUSTOM_HEADERS", "ANTHROPIC_CUSTOM_HEADERS", "CHATBOT_OPENAI_API_KEY", "CHATBOT_ANTHROPIC_API_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))  # no profile on disk leaks in
