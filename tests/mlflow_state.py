"""MLflow keeps the tracking URI and the active experiment in process globals and os.environ."""

from __future__ import annotations

import os

import mlflow


def reset_mlflow(monkeypatch) -> None:
    """Start clean: no active experiment, the tracking URI of MLFLOW_TRACKING_URI."""
    import mlflow.tracking.fluent as fluent

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


def forget_mlflow() -> None:
    """Drop the process-wide tracking URI (and the tracer bound to it) so later tests use their own store, and the
    run and experiment a command under `mlflow run` points the process at (set in os.environ by the command itself,
    so monkeypatch does not undo them): a module-scoped fixture of the next test module must not inherit them."""
    mlflow.set_tracking_uri(None)
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        os.environ.pop(var, None)
