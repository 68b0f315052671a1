"""Traces exported as in production: MLflow's asynchronous export with the queue settings of
`chatbot_model/tracing.py` (the rest of the suite exports synchronously: conftest sets
MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false)."""

from __future__ import annotations

import os

import mlflow
from mlflow import MlflowClient

from chatbot_model.config import configure_mlflow, load_settings

QUESTIONS = ["How do I promote a registered MLflow model version to Production?", "What is an MLflow trace?",
             "How does the router choose between GPT and Claude?", "What does the guardrail block?"]
# a batch large enough to overflow MLflow's default queues (1,000 traces, 2,048 spans) takes minutes to store on
# SQLite: the queue sizes are asserted here, and `benchmarks/bench_batch.py` counts the traces of 1,000 questions
BATCH = 60


def stored_trace_ids(experiment_id: str) -> set[str]:
    client, ids, token = MlflowClient(), set(), None
    while True:
        page = client.search_traces(experiment_ids=[experiment_id], max_results=500, page_token=token)
        ids |= {t.info.trace_id for t in page}
        token = page.token
        if not token:
            return ids


def test_async_export_with_the_production_queue_settings_keeps_every_trace_of_a_batch(index_dir, monkeypatch):
    import chatbot_model.tracing  # noqa: F401 - sets the production queue settings (setdefault)
    from chatbot_model.service import LLMService

    assert os.environ["MLFLOW_USE_BATCH_SPAN_PROCESSOR"] == "false"
    assert int(os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE"]) >= 100_000
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    settings = load_settings(index_dir=index_dir, guardrail_backend="embedded")
    configure_mlflow(settings)  # sets the tracking URI: MLflow rebuilds its tracer, now with async export
    service = LLMService.from_settings(settings)

    results = service.answer_many([f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})" for i in range(BATCH)])
    from mlflow.tracing.provider import _get_trace_exporter

    exporter = _get_trace_exporter()
    assert exporter is not None and exporter._is_async_enabled, "the export under test must be the async one"
    mlflow.flush_trace_async_logging(terminate=True)  # drain the queue, then stop its worker threads

    ids = {r.trace_id for r in results}
    assert len(ids) == BATCH and "" not in ids and None not in ids
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    stored = stored_trace_ids(experiment.experiment_id)
    assert ids <= stored, f"{len(ids - stored)} of {BATCH} traces were dropped by the async export"
    trace = mlflow.get_trace(results[-1].trace_id)
    assert len(trace.data.spans) == 7 and trace.info.state == "OK"
