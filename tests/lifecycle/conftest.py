"""Fixtures of the lifecycle tests: one real registered model version in a store of the module's own."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import mlflow
import pytest

from tests.mlflow_state import forget_mlflow, reset_mlflow

NAME = "llmops-chatbot"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, production_model):
    """The session's registered and promoted version (`production_model`) in a store of the module's own, a copy of
    its tracking database (the module may register and promote more), loaded by its alias."""
    root = tmp_path_factory.mktemp("pyfunc-store")
    with closing(sqlite3.connect(production_model["store"].removeprefix("sqlite:///"))) as source, \
            closing(sqlite3.connect(root / "mlflow.db")) as copy:
        source.backup(copy)  # consistent even while another test's exporter writes traces to the source
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{root / 'feedback.db'}")
        mp.chdir(root)
        reset_mlflow(mp)
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@production")
        forget_mlflow()
    return {"uri": uri, "root": root, "version": production_model["registered"], "model": model}


@pytest.fixture
def store(registered, monkeypatch):
    """The registered version's store as the tracking URI (and its feedback DB)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    monkeypatch.setenv("CHATBOT_FEEDBACK_DB_URL", f"sqlite:///{registered['root'] / 'feedback.db'}")
    reset_mlflow(monkeypatch)
    yield registered
    forget_mlflow()
