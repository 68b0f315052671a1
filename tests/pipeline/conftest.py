"""Fixtures of the pipeline tests: services over a three-document corpus, keys for the fake server."""

from __future__ import annotations

import json

import pytest

from chatbot_model.config import configure_mlflow, load_settings
from tests.helpers import SERVICE_CORPUS, provider_keys


@pytest.fixture
def make_service(tmp_path):
    corpus = tmp_path / "docs.json"
    corpus.write_text(json.dumps(SERVICE_CORPUS))

    def make(**overrides):
        from chatbot_model.pipeline.service import LLMService

        settings = load_settings(docs_path=corpus, index_dir=tmp_path / "idx", guardrail_backend="embedded",
                                 provider_max_retries=0, provider_timeout_s=5, **overrides)
        configure_mlflow(settings)
        return LLMService.from_settings(settings)

    return make


@pytest.fixture
def with_keys(fake_llm):
    return provider_keys(fake_llm)
