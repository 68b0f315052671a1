"""`_PyfuncChatbot.predict_stream` through MLflow's own `PyFuncModel.predict_stream` (schema enforced) on a
registered model, and the in-process serving backend streaming through it."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException


Q = "How do I serve a model?"


def test_predict_stream_yields_sources_deltas_and_the_final_row(store):
    events = list(store["model"].predict_stream({"question": Q}))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "sources" and kinds[-1] == "final" and set(kinds[1:-1]) == {"delta"}
    final = events[-1]
    assert "".join(e["text"] for e in events if e["event"] == "delta") == final["answer"]
    assert final["provider"] == "local" and final["sources"] == events[0]["sources"] and final["question"] == Q
    whole = store["model"].predict({"question": Q}).iloc[0]
    assert final["answer"] == whole["answer"]  # the same pipeline as predict


def test_predict_stream_takes_one_question(store):
    model = store["model"].unwrap_python_model()
    with pytest.raises(MlflowException, match="one question at a time; got 2"):
        list(model.predict_stream(None, {"question": [Q, Q]}))
    with pytest.raises(MlflowException, match="empty") as bad:
        list(model.predict_stream(None, {"question": "  "}))
    assert bad.value.error_code == "INVALID_PARAMETER_VALUE"


def test_the_in_process_backend_streams_through_the_model(store):
    from chatbot_model.config import load_settings
    from chatbot_model.server.backends import InProcessBackend

    backend = InProcessBackend(load_settings(tracking_uri=store["uri"]), model=store["model"])
    backend.load()
    events = list(backend.stream(Q))
    assert [e["event"] for e in events][0] == "sources" and events[-1]["event"] == "final"
    assert events[-1]["trace_id"] is not None and events[-1]["error"] == ""


def test_the_remote_backend_sends_the_whole_answer_as_one_delta():
    from chatbot_model.config import load_settings
    from chatbot_model.server.backends import RemoteBackend
    from tests.helpers import FakeScoringServer

    scoring = FakeScoringServer()
    try:
        backend = RemoteBackend(load_settings(scoring_url=scoring.url))
        events = list(backend.stream(Q))
    finally:
        scoring.close()
    assert [e["event"] for e in events] == ["sources", "delta", "final"]
    assert events[1]["text"] == events[2]["answer"] == f"remote answer to {Q}"
