"""Per-app state the routes share: the traces this process served (for feedback) and the metrics."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from chatbot_model.providers.breaker import BreakerCollector
from chatbot_model.tracing import writer as tracing

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class ServedTrace:
    """What feedback needs to know about an answer this process gave."""

    trace_id: str
    route: str | None = None
    provider: str | None = None
    model: str | None = None
    session_id: str | None = None
    model_version: str | None = None


class TraceMemory:
    """A bounded LRU of served traces (thread-safe)."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._items: OrderedDict[str, ServedTrace] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, trace: ServedTrace) -> None:
        if not trace.trace_id:
            return
        with self._lock:
            self._items[trace.trace_id] = trace
            self._items.move_to_end(trace.trace_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, trace_id: str) -> ServedTrace | None:
        with self._lock:
            item = self._items.get(trace_id)
            if item is not None:
                self._items.move_to_end(trace_id)
            return item

    def __len__(self) -> int:
        return len(self._items)


class TracesDroppedCollector:
    """`chatbot_traces_dropped_total`: traces this process's pipeline dropped (queue full, left at shutdown) or
    failed to write, read from `chatbot_model.tracing.writer.stats()` at scrape time."""

    def describe(self):
        return [CounterMetricFamily("chatbot_traces_dropped", "traces not written, by reason", labels=["reason"])]

    def collect(self):
        counts = tracing.stats()
        family = CounterMetricFamily("chatbot_traces_dropped", "traces not written, by reason", labels=["reason"])
        family.add_metric(["queue_full"], counts["dropped"])
        family.add_metric(["write_failed"], counts["failed"])
        yield family


class Metrics:
    """Prometheus metrics in a registry of their own (one per app, so tests and apps do not share counts)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("chatbot_http_requests_total", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("chatbot_http_request_duration_seconds", "HTTP request latency",
                                 ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.routes = Counter("chatbot_chat_route_total", "answers by chosen route", ["route"], registry=r)
        self.providers = Counter("chatbot_chat_provider_total", "answers by answering provider", ["provider"],
                                 registry=r)
        self.blocked = Counter("chatbot_chat_blocked_total", "answers blocked by the guardrail", registry=r)
        self.fallbacks = Counter("chatbot_chat_fallback_total", "answers given by a fallback provider", registry=r)
        self.feedback = Counter("chatbot_feedback_total", "feedback recorded by rating", ["rating"], registry=r)
        self.model_ready = Gauge("chatbot_model_ready", "1 when the backend can answer", registry=r)
        r.register(BreakerCollector())  # chatbot_provider_breaker_{opens,probes,skips}_total by provider
        r.register(TracesDroppedCollector())

    def observe_answer(self, row: dict) -> None:
        self.routes.labels(row["route"] or "unknown").inc()
        self.providers.labels(row["provider"] or "unknown").inc()
        if row["blocked"]:
            self.blocked.inc()
        if row["fallback"]:
            self.fallbacks.inc()
