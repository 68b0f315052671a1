"""OpenTelemetry export of the trace spans to a tracking server, which writes them (`CHATBOT_TRACE_SINK`).

`auto` (the default) exports over OTLP/HTTP (protobuf, `opentelemetry-exporter-otlp-proto-http`) when the
tracking URI is an http(s) server: MLflow 3's server takes OTLP at `/v1/traces` with the experiment id in the
`x-mlflow-experiment-id` header and writes the spans to its own store; the serving process only encodes and
posts a batch. With the embedded SQLite default (`sqlite:///...`) there is no server: the in-process MLflow
writer (`TracingClient.log_spans`) stays. `otlp` and `mlflow` force one or the other.

One exporter (one HTTP connection pool) per (tracking URI, experiment), reused by every batch of the
trace pipeline (writer.py: bounded queue, drops counted). Credentials come from MLflow's own variables
(MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD).
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import threading

from chatbot_model.config import TRACE_SINKS
from chatbot_model.errors import ConfigError

log = logging.getLogger(__name__)

OTLP_PATH = "/v1/traces"  # mlflow.tracing.utils.otlp.OTLP_TRACES_PATH
EXPERIMENT_HEADER = "x-mlflow-experiment-id"  # mlflow.tracing.utils.otlp.MLFLOW_EXPERIMENT_ID_HEADER
EXPORT_TIMEOUT_S = 10.0

_exporters: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def resolve_sink(sink: str, tracking_uri: str) -> str:
    """`otlp` or `mlflow`: where a trace for `tracking_uri` goes under the setting `sink`."""
    if sink not in TRACE_SINKS:
        raise ConfigError(f"unknown trace sink {sink!r}; choose one of {list(TRACE_SINKS)}")
    if sink == "auto":
        return "otlp" if is_server(tracking_uri) and otlp_available() else "mlflow"
    return sink


@functools.cache
def otlp_available() -> bool:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401 - deferred: optional package
    except ImportError:
        log.info("opentelemetry-exporter-otlp-proto-http is not installed: traces go through MLflow's writer")
        return False
    return True


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _exporter(tracking_uri: str, experiment_id: str):
    key = (tracking_uri, experiment_id)
    with _lock:
        if key not in _exporters:
            if not is_server(tracking_uri):
                raise ConfigError(f"CHATBOT_TRACE_SINK=otlp needs an http(s) tracking server, not {tracking_uri!r}; "
                                  "set MLFLOW_TRACKING_URI=http://HOST:5000 or CHATBOT_TRACE_SINK=auto")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # deferred: optional

            _exporters[key] = OTLPSpanExporter(endpoint=tracking_uri.rstrip("/") + OTLP_PATH,
                                               headers={EXPERIMENT_HEADER: experiment_id, **_auth_headers()},
                                               timeout=EXPORT_TIMEOUT_S)
        return _exporters[key]


def export_spans(tracking_uri: str, experiment_id: str, spans: list) -> None:
    """Post MLflow `Span`s (their OpenTelemetry spans) in one OTLP request; raise when the server refused them."""
    from opentelemetry.sdk.trace.export import SpanExportResult  # deferred: the SDK loads with mlflow anyway

    result = _exporter(tracking_uri, experiment_id).export([s._span for s in spans])
    if result != SpanExportResult.SUCCESS:
        raise RuntimeError(f"OTLP export of {len(spans)} spans to {tracking_uri}{OTLP_PATH} failed")


def close() -> None:
    with _lock:
        for exporter in _exporters.values():
            exporter.shutdown()
        _exporters.clear()
