"""The trace pipeline (bounded queue, background exporter, drops counted, drain) and /feedback without a flush.

Real components: LLMService over the shipped index, MLflow's sqlite store under tmp_path, the FastAPI app. The
exporter's writer is replaced only where a test must hold it (a blocked store), never to fake a result. No
wall-clock assertions: events, barriers and counts.
"""

import threading

import mlflow
import pytest
from fastapi.testclient import TestClient

from chatbot_model.store import feedback as feedback_module
from chatbot_model.tracing import writer as tracing
from chatbot_model.store.feedback import FeedbackStore
from chatbot_model.tracing.writer import TracePipeline, TraceRecord
from tests.helpers import free_port, make_service, make_settings, service_app, tracking_store

Q = "How do I promote a registered MLflow model version to Production?"


def record(n: int) -> TraceRecord:
    return TraceRecord(trace_id=tracing.new_trace_id(), tracking_uri="sqlite://", experiment_id="0", t0_ns=n,
                       question=f"q{n}", answer="a", route="local", route_reasons=(), provider="local", model="m",
                       blocked=False, blocked_by=None, abstained=False, fallback=None, latency_ms=1.0, sources=(), guardrail=None,
                       check_in=None, hint="", steps=())


class HeldWriter:
    """A writer that blocks until released (a stuck store); records what it was given."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list = []

    def __call__(self, records):
        self.entered.set()
        assert self.release.wait(60), "the test never released the writer"
        self.written.extend(records)


@pytest.fixture
def async_pipeline(monkeypatch):
    """A fresh process pipeline in asynchronous mode (the tests' default is synchronous writes)."""
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    pipe = TracePipeline(100, share=1.0)
    monkeypatch.setattr(tracing, "_pipeline", pipe)
    yield pipe
    pipe.shutdown()


# ------------------------------------------------------------------ the queue
def test_a_full_queue_drops_new_traces_and_counts_them():
    writer = HeldWriter()
    pipe = TracePipeline(maxsize=3, writer=writer, batch_size=1, share=1.0)
    assert pipe.submit(record(0))
    assert writer.entered.wait(30)              # the exporter holds record 0 in a stuck write
    assert all(pipe.submit(record(n)) for n in (1, 2, 3))   # the queue is now full
    assert not pipe.submit(record(4)) and not pipe.submit(record(5))
    assert pipe.stats() == {"queued": 4, "exported": 0, "dropped": 2, "failed": 0, "pending": 4}
    writer.release.set()
    assert pipe.flush(60)
    assert [r.question for r in writer.written] == ["q0", "q1", "q2", "q3"]
    assert pipe.stats() == {"queued": 4, "exported": 4, "dropped": 2, "failed": 0, "pending": 0}
    pipe.shutdown()


def test_a_failing_store_is_counted_and_the_exporter_goes_on():
    calls = []

    def writer(records):
        calls.append(len(records))
        if len(calls) == 1:
            raise ConnectionError("tracking store down")

    pipe = TracePipeline(maxsize=10, writer=writer, batch_size=1, share=1.0)
    for n in range(3):
        pipe.submit(record(n))
    assert pipe.flush(60)
    assert pipe.stats()["failed"] == 1 and pipe.stats()["exported"] == 2
    pipe.shutdown()


def test_shutdown_drains_what_was_queued_then_refuses_and_counts():
    writer = HeldWriter()
    pipe = TracePipeline(maxsize=100, writer=writer, batch_size=7, share=1.0)
    pipe.submit(record(0))
    assert writer.entered.wait(30)
    for n in range(1, 50):
        pipe.submit(record(n))
    writer.release.set()
    stats = pipe.shutdown(timeout=60)
    assert len(writer.written) == 50 and stats["exported"] == 50 and stats["pending"] == 0
    assert not pipe.submit(record(99)) and pipe.stats()["dropped"] == 1


def test_shutdown_is_bounded_when_the_store_hangs_and_counts_what_is_left():
    writer = HeldWriter()
    pipe = TracePipeline(maxsize=100, writer=writer, batch_size=1, share=1.0)
    for n in range(10):
        pipe.submit(record(n))
    assert writer.entered.wait(30)
    stats = pipe.shutdown(timeout=0.2)  # the writer never returns in time
    assert stats["dropped"] == 9 and stats["exported"] == 0   # 9 still queued; 1 stuck in the write
    writer.release.set()


def test_the_exporter_paces_on_its_cpu_not_on_waiting_for_the_store():
    """The exporter's pause follows the CPU its write used (an injected clock), not the wall time of a write
    that mostly waits on a tracking server."""
    cpu = [0.0]
    paused: list[float] = []

    class Recorded(TracePipeline):
        def _yield(self, spent):
            paused.append(spent)

    def writer(records):
        cpu[0] += 0.002 * len(records)  # the encoding; the post itself waits without using this thread's CPU

    pipe = Recorded(maxsize=10, writer=writer, batch_size=1, share=0.25, cpu_clock=lambda: cpu[0])
    for n in range(3):
        pipe.submit(record(n))
    assert pipe.flush(60)
    pipe.shutdown()
    assert paused == [pytest.approx(0.002)] * 3


# ------------------------------------------------------------------ real traces
@pytest.fixture(scope="module")
def service(shipped_index, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracing-service")
    return make_service(make_settings(shipped_index, tracking_store(tmp), tmp))


def test_every_trace_of_a_batch_arrives_after_the_drain(service, async_pipeline):
    mlflow.set_tracking_uri(service.settings.tracking_uri)
    questions = [Q, "What is FAISS?", "How is feedback stored?", "Fuck you, you worthless piece of shit."]
    results = service.answer_many(questions)
    ids = [r.trace_id for r in results]
    assert len(set(ids)) == 4 and all(i.startswith("tr-") and len(i) == 35 for i in ids)
    assert async_pipeline.flush(120)
    assert async_pipeline.stats()["exported"] == 4
    for result in results:
        trace = mlflow.get_trace(result.trace_id)
        assert trace.info.state == "OK" and trace.info.tags["route"] == result.route
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.name == "chat" and root.inputs == {"question": result.question}
        assert root.outputs["answer"] == result.answer
        names = {s.name: s.span_type for s in trace.data.spans}
        if result.blocked and not result.sources:  # blocked at the input: no retrieval, no answer
            assert names == {"chat": "CHAIN", "embed": "EMBEDDING", "guardrail_input": "GUARDRAIL"}
        else:
            assert names["retrieval"] == "RETRIEVER" and names["llm"] == "CHAT_MODEL" and len(names) == 7
            retrieval = next(s for s in trace.data.spans if s.name == "retrieval")
            assert [d["id"] for d in retrieval.outputs] == [s["id"] for s in result.sources]


def test_the_answer_keeps_its_trace_id_when_the_trace_is_dropped(service, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    writer = HeldWriter()
    pipe = TracePipeline(maxsize=1, writer=writer, batch_size=1, share=1.0)
    monkeypatch.setattr(tracing, "_pipeline", pipe)
    first = service.answer(Q)
    assert writer.entered.wait(30)
    results = service.answer_many([Q, "What is FAISS?"])  # one fits in the queue, one is dropped
    assert first.trace_id and all(r.trace_id.startswith("tr-") for r in results)
    assert pipe.stats()["dropped"] == 1 and tracing.stats()["dropped"] == 1
    writer.release.set()
    pipe.shutdown(60)


# ------------------------------------------------------------------ the server
@pytest.fixture
def app_client(service, tmp_path, monkeypatch, async_pipeline):
    settings = make_settings(service.settings.index_dir, service.settings.tracking_uri, tmp_path)
    app = service_app(settings, service)
    with TestClient(app) as client:
        assert app.state.backend.loaded.wait(120)
        yield client, app, settings


def test_feedback_returns_without_flushing_or_attaching_and_the_worker_attaches_later(app_client, monkeypatch):
    client, app, settings = app_client
    gate, calls = threading.Event(), []
    real_attach = feedback_module._attach

    def held_attach(row):
        calls.append(("attach", threading.current_thread().name))
        assert gate.wait(60)
        return real_attach(row)

    monkeypatch.setattr(feedback_module, "_attach", held_attach)
    monkeypatch.setattr(feedback_module, "_flush_traces", lambda *a: calls.append(("flush", None)))
    monkeypatch.setattr(FeedbackStore, "_tracking_reachable", lambda self: (True, None))
    answers = [client.post("/chat", json={"question": q}).json() for q in (Q, "What is FAISS?")]
    assert tracing.flush(120)
    for a in answers:  # every rating answered while attaching is held: nothing waits for MLflow
        r = client.post("/feedback", json={"trace_id": a["trace_id"], "rating": "up"})
        assert r.status_code == 200, r.text
    assert ("flush", None) not in calls and all(name == "feedback-sync" for _, name in calls)
    gate.set()
    store = app.state.feedback_store
    store.stop_background(60)
    store.sync_due()  # whatever the worker had not reached yet
    rows = store.ratings()
    assert len(rows) == 2 and all(r.synced_at is not None for r in rows)
    assert ("flush", None) not in calls


def test_metrics_count_dropped_traces(app_client, monkeypatch):
    client, app, _ = app_client
    monkeypatch.setattr(tracing._pipeline, "_counts", {**tracing.stats(), "dropped": 3, "failed": 1})
    text = client.get("/metrics").text
    assert 'chatbot_traces_dropped_total{reason="queue_full"} 3.0' in text
    assert 'chatbot_traces_dropped_total{reason="write_failed"} 1.0' in text


def test_feedback_is_503_with_retry_after_when_the_tracking_store_cannot_say(app_client, monkeypatch):
    client, app, settings = app_client
    from chatbot_model.server.routes import feedback as route

    def store_down(trace_id, settings):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(route, "lookup_trace", store_down)
    r = client.post("/feedback", json={"trace_id": "tr-0123456789abcdef0123456789abcdef", "rating": "up"})
    assert r.status_code == 503 and r.json()["error"] == "feedback_unavailable"
    assert r.headers["Retry-After"] == "5" and "tracking store is unavailable" in r.json()["message"]


def test_feedback_lookup_is_bounded_when_the_store_hangs(app_client, monkeypatch):
    client, app, settings = app_client
    from chatbot_model.server.routes import feedback as route

    release = threading.Event()
    monkeypatch.setattr(route, "LOOKUP_TIMEOUT_S", 0.2)
    monkeypatch.setattr(route, "lookup_trace", lambda trace_id, settings: release.wait(60))
    try:
        r = client.post("/feedback", json={"trace_id": "tr-0123456789abcdef0123456789abcdef", "rating": "up"})
    finally:
        release.set()
    assert r.status_code == 503 and "no answer within 0.2 s" in r.json()["message"]


def test_feedback_for_an_unreachable_tracking_server_is_503_not_404(app_client, monkeypatch):
    client, app, settings = app_client
    port = free_port()  # nothing listens there
    app.state.settings = settings.model_copy(update={"tracking_uri": f"http://127.0.0.1:{port}"})
    r = client.post("/feedback", json={"trace_id": "tr-0123456789abcdef0123456789abcdef", "rating": "up"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text


def test_server_shutdown_drains_the_queued_traces(service, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    writer = HeldWriter()
    real = tracing.write_traces

    def held_then_real(records):
        writer(records)
        real(records)

    pipe = TracePipeline(100, writer=held_then_real, batch_size=1, share=1.0)
    monkeypatch.setattr(tracing, "_pipeline", pipe)
    settings = make_settings(service.settings.index_dir, service.settings.tracking_uri, tmp_path)
    app = service_app(settings, service)
    with TestClient(app) as client:
        assert app.state.backend.loaded.wait(120)
        ids = [client.post("/chat", json={"question": f"{Q} ({n})"}).json()["trace_id"] for n in range(3)]
        assert writer.entered.wait(30) and pipe.stats()["pending"] == 3   # held: all three still queued
        writer.release.set()
    # the lifespan's drain ran before the client returned
    assert pipe.stats() == {"queued": 3, "exported": 3, "dropped": 0, "failed": 0, "pending": 0}
    assert all(mlflow.get_trace(i) is not None for i in ids)
    assert not pipe.submit(record(0))  # closed: later traces are refused and counted
