"""Fixtures of the server tests."""

from __future__ import annotations

import pytest

from tests.helpers import chat_page_app_server


@pytest.fixture
def chat_page_server(shipped_index, tmp_path, monkeypatch):
    """The chat page served (service backend) on a ready LiveServer, and its settings."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    server, settings = chat_page_app_server(shipped_index, tmp_path)
    yield server, settings
    server.close()
