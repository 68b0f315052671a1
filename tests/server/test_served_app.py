"""The happy paths of the HTTP API on the production serving path: the default in-process backend serving the
registered pyfunc model (as `llmops-chatbot serve` does), traces written by the real asynchronous exporter
(`served_app` in tests/conftest.py). Errors, limits and auth are in test_server.py (the service backend)."""

from __future__ import annotations

import mlflow

from chatbot_model.store.feedback import ASSESSMENT_NAME, FeedbackStore
from tests.helpers import wait_until

Q = "How do I promote a registered MLflow model version to Production?"
TOXIC = "Fuck you, you worthless piece of shit."


def stored_trace(trace_id: str):
    """The trace as the store has it, None while it is not written yet."""
    try:
        return mlflow.get_trace(trace_id)
    except mlflow.exceptions.MlflowException:
        return None


FIELDS = {"answer", "question", "standalone_question", "sources", "route", "provider", "model", "blocked",
          "abstained", "fallback", "trace_id", "model_version", "latency_ms", "error",
          "session_id"}


def test_health_names_the_in_process_backend_and_the_version(served_app, production_model):
    client, _ = served_app
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["ready"] is True and body["backend"] == "in-process"
    assert body["model_uri"] == "models:/llmops-chatbot@production"
    assert body["model_version"] == production_model["version"] and body["load_error"] is None
    assert client.get("/ready").json() == {"status": "ready"}


def test_chat_answers_with_sources_route_and_a_trace_written_off_the_request(served_app, production_model):
    client, _ = served_app
    r = client.post("/chat", json={"question": Q})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == FIELDS
    assert body["question"] == Q and body["error"] == ""
    assert body["answer"] and not body["blocked"] and not body["abstained"]
    assert body["route"] in ("gpt", "claude") and body["provider"] == "local" and body["model"] == "extractive-v1"
    assert "OPENAI_API_KEY is not set" in body["fallback"] or "ANTHROPIC_API_KEY is not set" in body["fallback"]
    assert body["sources"] and {"id", "title", "source", "score"} <= set(body["sources"][0])
    assert body["model_version"] == production_model["version"]
    assert body["trace_id"].startswith("tr-") and body["latency_ms"] > 0
    # the exporter thread writes the trace after the answer left: it arrives, with a span per pipeline step
    trace = wait_until(lambda: stored_trace(body["trace_id"]), f"trace {body['trace_id']} in the store")
    spans = {s.name for s in trace.data.spans}
    assert {"guardrail_input", "retrieval", "routing", "llm", "guardrail_output"} <= spans, spans


def test_toxic_question_is_blocked_without_sources(served_app):
    client, _ = served_app
    body = client.post("/chat", json={"question": TOXIC}).json()
    assert body["blocked"] is True and body["route"] == "blocked" and body["sources"] == []


def test_off_topic_question_is_reported_abstained_without_sources(served_app):
    client, _ = served_app
    body = client.post("/chat", json={"question": "Who won the 1998 football world cup?"}).json()
    assert body["abstained"] is True and body["blocked"] is False and body["sources"] == []
    assert "knowledge base does not cover" in body["answer"] and body["trace_id"].startswith("tr-")
    assert client.post("/chat", json={"question": Q}).json()["abstained"] is False


def test_feedback_is_recorded_with_what_was_served_and_lands_on_the_trace(served_app, production_model):
    client, settings = served_app
    answer = client.post("/chat", json={"question": Q}).json()
    r = client.post("/feedback", json={"trace_id": answer["trace_id"], "rating": "down", "comment": "too vague"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "recorded", "trace_id": answer["trace_id"], "rating": "down"}
    rows = FeedbackStore(settings.feedback_db_url).ratings()
    assert len(rows) == 1
    row = rows[0]
    assert (row.trace_id, row.rating, row.comment, row.session_id) == (answer["trace_id"], "down", "too vague",
                                                                     answer["session_id"])
    assert (row.route, row.provider, row.model) == (answer["route"], answer["provider"], answer["model"])
    assert row.model_version == production_model["version"]  # the version that answered
    # attached to the trace as human feedback once both the trace and the rating are written
    def ratings_on_trace():
        trace = stored_trace(answer["trace_id"])
        return trace and [a for a in trace.info.assessments if a.name == ASSESSMENT_NAME]

    found = wait_until(ratings_on_trace, "the rating on the trace")
    assert len(found) == 1 and found[0].value is False and found[0].rationale == "too vague"
