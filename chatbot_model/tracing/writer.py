"""The trace pipeline: one MLflow trace per answered question, written off the request thread.

The request thread only takes a small immutable `TraceRecord` (what happened, step bounds, the experiment and
the tracking URI in force) and puts it on a bounded queue; its trace id (`tr-<32 hex>`, MLflow's own format) is
made up front, so the answer carries it at once. One exporter thread takes records in batches, builds the MLflow
spans (a root CHAIN span and a child per pipeline step) and writes a whole batch with one
`TracingClient.log_spans` call (one transaction on a SQL store; the OTLP endpoint of a tracking server).

Under overload nothing grows: when the queue is full, new traces are dropped and counted (`stats()["dropped"]`,
`chatbot_traces_dropped_total` on the server's /metrics); the answers still carry their trace ids, and a rating
for a dropped trace is stored and later marked orphaned by the feedback store. A failed write (store down) is
counted as `failed`. `shutdown()` (at exit, and by the server's lifespan) drains the queue for at most 10 s;
what is left then is counted as dropped. `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false` writes each batch's traces in
the calling thread instead (tests, scripts that read their traces back at once).

Batch steps (one embedding call, one guardrail call, ...) are shared by every question of a batch, so each
question's child spans carry the wall-clock bounds of the step they took part in.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chatbot_model.config import Settings
from chatbot_model.contract import ChatResult
from chatbot_model.tracing.otlp import export_spans, resolve_sink

log = logging.getLogger(__name__)

SPAN_TYPES = {
    "condense": "CHAIN",  # follow-up resolution: only for a question with history
    "embed": "EMBEDDING",
    "guardrail_input": "GUARDRAIL",
    "retrieval": "RETRIEVER",
    "routing": "CHAIN",
    "llm": "CHAT_MODEL",
    "guardrail_output": "GUARDRAIL",
}
_DEFAULTS = Settings.model_construct()  # CHATBOT_TRACE_QUEUE_SIZE and _TRACE_EXPORT_SHARE when none are given
BATCH_SIZE = 64           # records per write (a log_spans call, an OTLP post)
DRAIN_TIMEOUT_S = 10.0    # shutdown drains at most this long
IDLE_S = 0.25             # no request for this long: the exporter writes at full speed


@dataclass(frozen=True)
class TraceRecord:
    """What one answered question needs for its trace; built in the request thread, cheap and immutable."""

    trace_id: str
    tracking_uri: str
    experiment_id: str
    t0_ns: int
    question: str
    answer: str
    route: str
    route_reasons: tuple
    provider: str
    model: str
    blocked: bool
    blocked_by: str | None
    abstained: bool
    fallback: str | None
    latency_ms: float
    sources: tuple
    guardrail: dict | None
    check_in: dict | None
    hint: str
    steps: tuple  # (name, start_ns, end_ns)
    standalone_question: str = ""  # what retrieval searched (a follow-up resolved); "" without history
    model_version: str = ""  # the registered version that answered ("" when not a registered model)
    sink: str = "mlflow"  # "otlp": posted to the tracking server's /v1/traces (tracing/otlp.py)


def new_trace_id() -> str:
    """An MLflow v3 trace id: `tr-` and a random 128-bit OpenTelemetry trace id in hex."""
    return "tr-" + os.urandom(16).hex()


def make_record(result: ChatResult, steps: dict, check_in, t0_ns: int, hint: str, *, tracking_uri: str,
                experiment_id: str, sink: str = "mlflow") -> TraceRecord:
    taken = list(SPAN_TYPES) if result.blocked_by != "input" else ["embed", "guardrail_input"]
    if not result.standalone_question:
        taken = [name for name in taken if name != "condense"]
    bounds = tuple((name, steps[name].start_ns, steps[name].end_ns) for name in taken if name in steps)
    return TraceRecord(
        trace_id=new_trace_id(), tracking_uri=tracking_uri, experiment_id=str(experiment_id), t0_ns=t0_ns,
        question=result.question, answer=result.answer, route=result.route,
        route_reasons=tuple(result.route_reasons or ()), provider=result.provider, model=result.model,
        blocked=bool(result.blocked), blocked_by=result.blocked_by, abstained=bool(result.abstained),
        fallback=result.fallback,
        latency_ms=float(result.latency_ms), sources=tuple(result.sources or ()), guardrail=result.guardrail,
        check_in=check_in.to_dict() if check_in is not None else None, hint=hint, steps=bounds,
        standalone_question=result.standalone_question or "", model_version=str(result.model_version or ""),
        sink=sink)


# ---------------------------------------------------------------- building MLflow spans (exporter thread)
def _step_io(name: str, r: TraceRecord) -> tuple[dict, object]:
    searched = r.standalone_question or r.question
    if name == "condense":
        return {"question": r.question}, {"standalone_question": r.standalone_question}
    if name == "embed":
        return {"question": r.question, "standalone_question": r.standalone_question}, None
    if name == "guardrail_input":
        return {"text": r.question}, r.check_in
    if name == "retrieval":
        return {"question": searched}, [
            {"id": s["id"], "page_content": s["title"], "metadata": {"doc_uri": s["source"], "score": s["score"]}}
            for s in r.sources]
    if name == "routing":
        return {"question": r.question}, {"route": r.route, "reasons": list(r.route_reasons)}
    if name == "llm":
        return {"system": r.hint, "model": r.model}, {"answer": r.answer, "provider": r.provider,
                                                      "fallback": r.fallback}
    return {"text": r.answer}, r.guardrail


def build_spans(r: TraceRecord) -> list:
    """The MLflow spans of one record: a root `chat` CHAIN span, then one span per step taken."""
    from mlflow.entities import Span
    from mlflow.tracing.constant import SpanAttributeKey, TraceTagKey
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, Status, StatusCode

    otel_trace_id = int(r.trace_id[3:], 16)
    ok = Status(StatusCode.OK)
    resource = Resource.get_empty()
    dumps = json.dumps
    tag = SpanAttributeKey.TRACE_TAG_PREFIX  # root attributes the store turns into trace tags

    def span(name, span_type, span_id, parent_id, start, end, inputs, outputs, extra=None):
        attributes = {SpanAttributeKey.REQUEST_ID: dumps(r.trace_id), SpanAttributeKey.SPAN_TYPE: dumps(span_type),
                      SpanAttributeKey.INPUTS: dumps(inputs, default=str),
                      SpanAttributeKey.OUTPUTS: dumps(outputs, default=str), **(extra or {})}
        return Span(ReadableSpan(
            name=name, context=SpanContext(otel_trace_id, span_id, is_remote=False),
            parent=SpanContext(otel_trace_id, parent_id, is_remote=False) if parent_id else None,
            start_time=start, end_time=max(end, start), attributes=attributes, status=ok, resource=resource))

    root_id = (int.from_bytes(os.urandom(8), "big") >> 8) | 1  # children: root_id + n, never 0, never > 2**64
    end_ns = r.t0_ns + int(r.latency_ms * 1e6)
    tags = {"route": r.route, "provider": r.provider, "blocked": str(r.blocked).lower(),
            "abstained": str(r.abstained).lower(), TraceTagKey.TRACE_NAME: "chat"}
    if r.model_version:  # `feedback compare` finds each version's answers by this tag
        tags["model_version"] = r.model_version
    extra = {"route": dumps(r.route), "provider": dumps(r.provider), "model": dumps(r.model),
             "blocked": dumps(str(r.blocked)), "abstained": dumps(str(r.abstained)),
             "latency_ms": dumps(str(r.latency_ms)),
             **{tag + k: dumps(v) for k, v in tags.items()}}
    root_inputs = {"question": r.question, **({"standalone_question": r.standalone_question}
                                              if r.standalone_question else {})}
    spans = [span("chat", "CHAIN", root_id, None, r.t0_ns, end_ns, root_inputs,
                  {"answer": r.answer, "route": r.route, "provider": r.provider, "model": r.model,
                   "blocked": r.blocked, "abstained": r.abstained, "fallback": r.fallback}, extra)]
    for n, (name, start, end) in enumerate(r.steps, 2):
        inputs, outputs = _step_io(name, r)
        spans.append(span(name, SPAN_TYPES[name], root_id + n, root_id, start, end, inputs, outputs))
    return spans


def write_traces(records: list[TraceRecord]) -> None:
    """Write records' traces per (tracking URI, experiment, sink): OTLP requests of at most `BATCH_SIZE` traces
    that the tracking server writes (`otlp`), or one `TracingClient.log_spans` call in this process (`mlflow`)."""
    from mlflow.tracing.client import TracingClient

    groups: dict[tuple[str, str, str], list] = {}
    for r in records:
        groups.setdefault((r.tracking_uri, r.experiment_id, r.sink), []).append(r)
    for (uri, experiment_id, sink), group in groups.items():
        if sink == "otlp":  # posts of at most BATCH_SIZE traces: a synchronous write of a whole evaluation is many
            for start in range(0, len(group), BATCH_SIZE):
                export_spans(uri, experiment_id, [s for r in group[start:start + BATCH_SIZE] for s in build_spans(r)])
        else:
            TracingClient(uri).log_spans(experiment_id, [s for r in group for s in build_spans(r)])


# ---------------------------------------------------------------- the pipeline
class TracePipeline:
    """A bounded queue of `TraceRecord`s and one exporter thread that writes them in batches.

    `writer` writes a list of records (tests inject one that blocks or fails); `maxsize` bounds memory.
    """

    def __init__(self, maxsize: int = _DEFAULTS.trace_queue_size, *, writer: Callable[[list], None] = write_traces,
                 batch_size: int = BATCH_SIZE, share: float = _DEFAULTS.trace_export_share,
                 cpu_clock: Callable[[], float] = time.thread_time):
        self.maxsize = maxsize
        self.batch_size = batch_size
        self.writer = writer
        self.share = share  # of the CPU the exporter thread may use while requests come in
        self.cpu_clock = cpu_clock  # this thread's CPU seconds: waiting on a tracking server costs the process nothing
        self._hurry = threading.Event()  # flush/shutdown: write at full speed
        self._last_submit = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # queued + being written
        self._counts = {"queued": 0, "exported": 0, "dropped": 0, "failed": 0}
        self._thread: threading.Thread | None = None
        self._closed = False

    # -------------------------------------------------- request side
    def submit(self, record: TraceRecord) -> bool:
        """Queue a record; False (and counted as dropped) when the queue is full or the pipeline closed."""
        with self._lock:
            if self._closed:
                self._counts["dropped"] += 1
                return False
            self._ensure_thread()
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._counts["dropped"] += 1
                return False
            self._pending += 1
            self._counts["queued"] += 1
            self._last_submit = time.monotonic()
        return True

    def stats(self) -> dict:
        """Counts since start: queued, exported, dropped (queue full, or left at shutdown), failed (writes that
        raised), and pending (queued or being written now)."""
        with self._lock:
            return {**self._counts, "pending": self._pending}

    # -------------------------------------------------- exporter side
    def _ensure_thread(self) -> None:  # under the lock
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="trace-exporter", daemon=True)
            self._thread.start()

    def _take(self, first) -> list:
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # shutdown sentinel
                return
            batch = self._take(item)
            stop = batch[-1] is None
            records = [r for r in batch if r is not None]
            started = self.cpu_clock()
            self._write(records)
            if stop:
                return
            self._yield(self.cpu_clock() - started)

    def _yield(self, spent: float) -> None:
        """Keep the exporter's share of the CPU (and of the GIL) at `share` while requests keep coming: after
        `spent` CPU seconds of writing, pause. Writing a trace into MLflow's store in this process costs more than
        answering, so under sustained load the queue fills and new traces are dropped (counted) instead of answers
        slowing down; posting to a tracking server (OTLP) costs only the encoding, and the wait for its answer
        is not paced. Idle, flushing or shutting down: no pause."""
        if self.share >= 1.0 or self._hurry.is_set() or not busy(self._last_submit):
            return
        self._hurry.wait(pause_s(spent, self.share))

    def _write(self, records: list) -> None:
        try:
            self.writer(records)
            outcome = "exported"
        except Exception as exc:  # the store is down or refused: count and go on; answers never wait
            log.warning("could not write %d trace(s): %s: %s", len(records), type(exc).__name__, exc)
            outcome = "failed"
        with self._idle:
            self._counts[outcome] += len(records)
            self._pending -= len(records)
            if self._pending == 0:
                self._idle.notify_all()

    def write_now(self, records: list) -> None:
        """Write in the calling thread (synchronous mode), counted like the exporter's writes."""
        with self._lock:
            self._pending += len(records)
            self._counts["queued"] += len(records)
        self._write(records)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued trace is written (or `timeout` seconds); True when nothing is pending."""
        self._hurry.set()
        try:
            with self._idle:
                return self._idle.wait_for(lambda: self._pending == 0, timeout)
        finally:
            if not self._closed:
                self._hurry.clear()

    def shutdown(self, timeout: float = DRAIN_TIMEOUT_S) -> dict:
        """Stop taking traces, drain the queue for at most `timeout` s; what is left is counted as dropped."""
        with self._lock:
            if self._closed:
                return {**self._counts, "pending": self._pending}
            self._closed = True
            thread = self._thread
        self._hurry.set()
        if thread is not None and thread.is_alive():
            deadline = time.monotonic() + timeout
            while True:  # the sentinel goes after the last record; wait for room without passing the deadline
                try:
                    self._queue.put(None, timeout=max(0.0, min(0.1, deadline - time.monotonic())))
                    break
                except queue.Full:
                    if time.monotonic() >= deadline:
                        break
            thread.join(max(0.0, deadline - time.monotonic()))
        left = 0
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    left += 1
            except queue.Empty:
                break
        with self._idle:
            self._counts["dropped"] += left
            self._pending -= left
            self._idle.notify_all()
            stats = {**self._counts, "pending": self._pending}
        if left or stats["pending"]:
            log.warning("trace pipeline shut down with %d trace(s) unwritten after %.0f s", left + stats["pending"],
                        timeout)
        return stats


_pipeline: TracePipeline | None = None
_pipeline_lock = threading.Lock()
_last_activity = 0.0


def note_activity() -> None:
    """A request is being served (besides traces queued): background writers keep to their share."""
    global _last_activity
    _last_activity = time.monotonic()


def busy(*since: float) -> bool:
    """True when a request was served (or a trace queued) within the last `IDLE_S` seconds."""
    return time.monotonic() - max((_last_activity, *since)) <= IDLE_S


def pace(spent: float, share: float, stop: threading.Event) -> None:
    """After `spent` CPU seconds of background work (`time.thread_time`), wait so that it stays `share` of the CPU
    while requests come in (a background thread takes the GIL from the request threads); `stop` ends the wait
    early."""
    if share < 1.0 and busy():
        stop.wait(pause_s(spent, share))


def pause_s(spent: float, share: float) -> float:
    """The pause after `spent` CPU seconds that keeps a background thread at `share` of the CPU."""
    return spent * (1.0 - share) / share


def pipeline(maxsize: int | None = None, share: float | None = None) -> TracePipeline:
    """This process's pipeline (created on first use with `maxsize` and `share`, drained at exit)."""
    global _pipeline
    if _pipeline is None:
        with _pipeline_lock:
            if _pipeline is None:
                _pipeline = TracePipeline(maxsize or _DEFAULTS.trace_queue_size,
                                          share=_DEFAULTS.trace_export_share if share is None else share)
                atexit.register(_pipeline.shutdown)
    return _pipeline


def stats() -> dict:
    """This process's trace counts (no Prometheus needed): queued, exported, dropped, failed, pending."""
    return pipeline().stats()


def flush(timeout: float | None = None) -> bool:
    return pipeline().flush(timeout)


def shutdown(timeout: float = DRAIN_TIMEOUT_S) -> dict:
    return pipeline().shutdown(timeout)


def _async_enabled() -> bool:
    from mlflow.environment_variables import MLFLOW_ENABLE_ASYNC_TRACE_LOGGING

    return MLFLOW_ENABLE_ASYNC_TRACE_LOGGING.get()


def record_traces(results: Iterable[ChatResult], steps: dict, checks_in: Iterable, t0_ns: int, hint: str, *,
                  queue_size: int | None = None, share: float | None = None, sink: str = "auto") -> None:
    """Give each result its trace id and queue its trace (written in the calling thread when async logging is
    off). Dropped traces keep their ids: the answer was given, only its trace is missing."""
    import mlflow
    from mlflow.tracking.fluent import _get_experiment_id

    uri, experiment_id = mlflow.get_tracking_uri(), _get_experiment_id() or "0"
    sink = resolve_sink(sink, uri)
    records = []
    for result, check in zip(results, checks_in):
        record = make_record(result, steps, check, t0_ns, hint, tracking_uri=uri, experiment_id=experiment_id,
                             sink=sink)
        result.trace_id = record.trace_id
        records.append(record)
    note_activity()
    pipe = pipeline(queue_size, share)
    if not _async_enabled():
        pipe.write_now(records)
        return
    for record in records:
        pipe.submit(record)


__all__ = ["TracePipeline", "TraceRecord", "flush", "pipeline", "record_traces", "shutdown", "stats"]
