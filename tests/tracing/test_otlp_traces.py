"""Traces through OpenTelemetry, written by the tracking server: with an http(s) tracking URI the trace pipeline
posts its spans over OTLP/HTTP to a real `mlflow server` (`/v1/traces`, the experiment id in a header); they are
found by `mlflow.search_traces`, and feedback attaches to them. The SQLite default keeps the in-process writer."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from chatbot_model.config import load_settings
from chatbot_model.errors import ConfigError
from chatbot_model.lifecycle.comparison import version_stats
from chatbot_model.store.feedback import FeedbackStore
from chatbot_model.tracing import writer as tracing
from chatbot_model.tracing.otlp import resolve_sink
from chatbot_model.tracing.writer import TracePipeline, TraceRecord
from tests.helpers import free_port, server_process

pytestmark = pytest.mark.slow


def test_the_sink_follows_the_tracking_uri():
    assert resolve_sink("auto", "sqlite:///mlflow.db") == "mlflow"
    assert resolve_sink("auto", "http://127.0.0.1:5000") == "otlp"
    assert resolve_sink("mlflow", "http://127.0.0.1:5000") == "mlflow"
    with pytest.raises(ConfigError, match="CHATBOT_TRACE_SINK=otlp needs an http"):
        load_settings(trace_sink="otlp")
    with pytest.raises(ConfigError, match="unknown trace sink 'kafka'"):
        load_settings(trace_sink="kafka")


def record(uri: str, experiment_id: str, n: int, model_version: str = "") -> TraceRecord:
    t0 = 1_700_000_000_000_000_000 + n * 1_000_000
    return TraceRecord(trace_id=tracing.new_trace_id(), tracking_uri=uri, experiment_id=experiment_id, t0_ns=t0,
                       question=f"question {n}", answer="an answer [1]", route="gpt", route_reasons=("short",),
                       provider="local", model="extractive", blocked=False, blocked_by=None, abstained=False,
                       fallback="openai: OPENAI_API_KEY is not set", latency_ms=3.0,
                       sources=({"id": "d1", "title": "T", "source": "s", "score": 0.9},), guardrail=None,
                       check_in=None, hint="hint", steps=(("retrieval", t0, t0 + 1_000_000),
                                                          ("llm", t0 + 1_000_000, t0 + 2_000_000)), sink="otlp",
                       model_version=model_version)


@pytest.fixture
def mlflow_server(tmp_path):
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    url = f"http://127.0.0.1:{free_port()}"
    store = f"sqlite:///{tmp_path / 'server.db'}"
    with server_process([bindir / "mlflow", "server", "--backend-store-uri", store, "--default-artifact-root",
                         tmp_path / "server-artifacts", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
                         "--workers", "1"], env, tmp_path, url, "/health", tmp_path / "mlflow-server.log"):
        yield url


def test_traces_sent_over_otlp_are_stored_by_the_server_and_take_feedback(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    experiment_id = MlflowClient().create_experiment("llmops-chatbot")
    records = [record(mlflow_server, experiment_id, n) for n in range(20)]
    pipe = TracePipeline(100, share=1.0)  # the serving process's exporter thread, batches of up to 64
    for r in records:
        assert pipe.submit(r)
    assert pipe.flush(60)
    assert pipe.stats()["exported"] == 20 and pipe.stats()["failed"] == 0

    found = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=100)
    assert {t.info.trace_id for t in found} == {r.trace_id for r in records}
    trace = mlflow.get_trace(records[0].trace_id)
    assert [s.name for s in trace.data.spans] == ["chat", "retrieval", "llm"]
    assert trace.info.tags["route"] == "gpt"
    mlflow.log_feedback(trace_id=records[0].trace_id, name="user_rating", value=True,
                        source=mlflow.entities.AssessmentSource(source_type="HUMAN", source_id="u1"))
    (assessment,) = mlflow.get_trace(records[0].trace_id).info.assessments
    assert assessment.name == "user_rating" and assessment.value is True
    pipe.shutdown(5)


def test_a_large_synchronous_write_is_posted_in_bounded_batches(mlflow_server, monkeypatch):
    """A whole evaluation written at once (`write_now`) goes out as posts of at most 64 traces, all stored."""
    mlflow.set_tracking_uri(mlflow_server)
    experiment_id = MlflowClient().create_experiment("llmops-chatbot-eval")
    posts, real = [], tracing.export_spans
    monkeypatch.setattr(tracing, "export_spans", lambda uri, exp, spans: (posts.append(len(spans)), real(uri, exp, spans)))
    pipe = TracePipeline(10, share=1.0)
    pipe.write_now([record(mlflow_server, experiment_id, n) for n in range(130)])
    assert pipe.stats()["exported"] == 130 and pipe.stats()["failed"] == 0
    assert posts == [64 * 3, 64 * 3, 2 * 3]  # three spans a trace: chat, retrieval, llm
    found = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=200, include_spans=False)
    assert len(found) == 130
    pipe.shutdown(5)


def test_a_refused_export_is_counted_as_failed(mlflow_server):
    pipe = TracePipeline(10, share=1.0)
    assert pipe.submit(record(mlflow_server, "999999", 0))  # no such experiment: the server refuses it
    pipe.flush(30)
    assert pipe.stats()["failed"] == 1
    pipe.shutdown(5)


def test_ratings_attach_through_the_server_and_feedback_compare_reads_them(mlflow_server, monkeypatch, tmp_path):
    """The production path end to end: traces over OTLP, ratings stored without attaching, then attached by a
    pass of the background worker over the server's REST API (assessments on the traces), and `feedback compare`
    counting both."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    experiment_id = MlflowClient().create_experiment("llmops-chatbot")
    records = [record(mlflow_server, experiment_id, n, model_version="3") for n in range(12)]
    pipe = TracePipeline(100, share=1.0)
    for r in records:
        pipe.submit(r)
    assert pipe.flush(60) and pipe.stats()["exported"] == 12
    pipe.shutdown(5)

    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", attach=False)  # stored only, as /feedback does
    for n, r in enumerate(records[:9]):
        store.record(trace_id=r.trace_id, rating="up" if n < 6 else "down", session_id=f"s{n}", model_version="3")
    report = store.sync_due()  # one pass of the background worker
    assert (report.attached, report.pending) == (9, 0)
    assert store.stats()["unsynced"] == 0
    ratings = [a for r in records[:9] for a in mlflow.get_trace(r.trace_id).info.assessments]
    assert sorted(a.value for a in ratings) == [False] * 3 + [True] * 6
    assert {a.name for a in ratings} == {"user_rating"}

    stats = version_stats(store, "3", client=MlflowClient(), experiment_ids=[experiment_id])
    assert (stats.up, stats.down, stats.answers) == (6, 3, 12)
