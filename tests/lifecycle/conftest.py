"""Fixtures of the lifecycle tests: one real registered model version shared by a module."""

from __future__ import annotations

import mlflow
import pytest

from tests.helpers import DOCS, tracking_store
from tests.mlflow_state import forget_mlflow, reset_mlflow

NAME = "llmops-chatbot"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, shipped_index):
    """One real model version, logged from code, registered and promoted to Staging then Production."""
    from chatbot_model.config import load_settings
    from chatbot_model.lifecycle.registry import log_and_register, promote

    root = tmp_path_factory.mktemp("pyfunc-store")
    uri = tracking_store(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("CHATBOT_INDEX_DIR", str(shipped_index))  # reused (copied), never modified
        mp.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{root / 'feedback.db'}")
        mp.chdir(root)
        reset_mlflow(mp)
        version = log_and_register(load_settings(docs_path=DOCS), NAME)
        promote(NAME, "Staging", version.version)
        promote(NAME, "Production", version.version, force=True, reason="test fixture")
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@production")
        forget_mlflow()
    return {"uri": uri, "root": root, "version": version, "model": model}


@pytest.fixture
def store(registered, monkeypatch):
    """The registered version's store as the tracking URI (and its feedback DB)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{registered['root'] / 'feedback.db'}")
    reset_mlflow(monkeypatch)
    yield registered
    forget_mlflow()
